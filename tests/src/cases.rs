//! The table of op cases.
