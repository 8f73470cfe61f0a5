//! # ferrum-api
//!
//! The OpenAI-compatible API as data, apart from any HTTP server:
//!
//! - [`request`]: the request bodies Ferrum accepts (completions, chat).
//! - [`limits`]: what one request may ask for (`n`, stop strings, messages, prompts).
//! - [`error`]: errors in OpenAI's shape, with their HTTP status.
//! - [`job`]: how a body becomes engine requests, given what is served.
//!
//! `ferrum serve` (crate `ferrum-cli`, feature `axum` here) reads bodies and
//! relays engine events; everything between the bytes and the engine
//! request is here, pure, so tests and fuzzers reach it without a server.

pub mod error;
pub mod job;
pub mod limits;
pub mod request;
pub mod tools;

pub use error::ApiError;
pub use job::{Job, Served, parse_json};
pub use limits::RequestLimits;
