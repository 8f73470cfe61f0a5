//! One file per panel; each owns its state and draws itself from it.

pub mod chat;
pub mod compare;
pub mod dashboard;
pub mod model;
pub mod remote;
