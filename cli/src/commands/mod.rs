//! One file per `ferrum` subcommand.

pub mod chat;
pub mod devices;
pub mod eval;
pub mod generate;
pub mod info;
pub mod logits;
pub mod quantize;
