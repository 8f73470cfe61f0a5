//! Serving many requests at once: continuous batching over a paged KV cache
//! with prefix caching, preemption by recompute, streaming events, metrics.
//! Backend-free; the HTTP server (`ferrum serve`) and `ferrum bench` sit on
//! top of `EngineHandle`.

pub mod blocks;
pub mod engine;
pub mod handle;
pub mod metrics;
pub mod sequence;

pub use engine::spawn;
pub use handle::{EngineConfig, EngineHandle, SubmitError};
pub use metrics::Metrics;
pub use sequence::{Event, GenerationRequest, TokenLogprobs};
