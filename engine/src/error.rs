//! The engine's error type. Every failure a user can cause (bad files, bad
//! requests, a backend that lacks an op) is one of these, never a panic.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid config: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("unknown architecture {found:?}; supported: {}", crate::arch::Architecture::supported_names())]
    UnknownArchitecture { found: String },
    #[error("{path}: malformed safetensors: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    #[error("weight {name:?}: {msg}")]
    Weight { name: String, msg: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("backend {backend} lacks ops this model needs: {}", missing.join(", "))]
    Unsupported { backend: String, missing: Vec<String> },
    #[error("op {op}: {msg}")]
    Op { op: &'static str, msg: String },
    #[error("KV cache: {0}")]
    KvCache(String),
    #[error("invalid request: {0}")]
    Request(String),
    #[error("backend: {0}")]
    Backend(String),
    /// A model refused before loading: what it needs against what is free.
    #[error("not enough memory: {0}")]
    Memory(String),
    /// Stopped because the caller asked (a load's progress callback said no).
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn op(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Op { op, msg: msg.into() }
    }
}
