//! Runs cases.
