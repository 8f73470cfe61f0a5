//! # ferrum-engine
//!
//! Everything Ferrum does that does not depend on a GPU. Map:
//!
//! - [`backend`]: the `Backend` trait (memory + execute), the seam every device plugs into.
//! - [`ops`]: the op table; one file per op with its parameters, shape rule, math and CPU reference.
//! - [`quant`]: weight formats (NVFP4, MXFP4, FP8, INT8, INT4, GGUF's blocks): quantize, dequantize a row;
//!   bit-exact with the tools.
//! - [`cpu`]: the CPU reference backend (plain loops, f32 accumulation): the oracle.
//! - [`tensor`], [`dtype`]: backend-owned tensors and their element types; [`bytes`]: bytes shared
//!   without copying (a GGUF tensor borrowed from the file's memory map).
//! - [`config`]: `config.json` in the transformers-4 and -5 spellings.
//! - [`loader`]: safetensors (single and sharded) and GGUF (all llama.cpp quant types), memory-mapped
//!   and validated; GGUF tensors renamed to Hugging Face names.
//! - [`source`]: a model path (HF folder or GGUF file) with its config, weights, tokenizer, template.
//! - [`model`]: the Llama-family decoder, written once against the trait, batched over sequences.
//! - [`kv_cache`]: the paged KV cache (blocks, block tables, the block pool).
//! - [`tokenizer`], [`tokenizer_gguf`], [`chat_template`]: text in and out (tokenizers rebuilt
//!   from GGUF metadata too); incremental detokenisation.
//! - [`sampler`]: greedy, temperature, top-k/p, min-p, penalties, seeded; [`constraint`]: the
//!   tokens a JSON schema, regex, choice or Lark grammar allows next (llguidance).
//! - [`logits`]: logits of every position, by prefill or by decode (for checks and perplexity).
//! - [`eval`]: perplexity over windows of a text.
//! - [`serving`]: continuous batching, prefix caching, streaming events and metrics for many requests.
//! - [`generate`]: the generation loop for one sequence, with stop conditions; [`speculative`]: guess
//!   k tokens (prompt lookup), verify them in one pass, keep the target distribution.
//! - [`memory`]: what a model needs (weights, KV cache, activations) against what a backend has free.
//!
//! Data flows one way: files -> loader -> weights -> model -> Backend -> logits
//! -> sampler -> tokens -> detokenizer.

pub mod arch;
pub mod backend;
pub mod bytes;
pub mod chat_template;
pub mod config;
pub mod constraint;
pub mod cpu;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod faults;
pub mod generate;
pub mod kv_cache;
pub mod loader;
pub mod logits;
pub mod memory;
pub mod model;
pub mod ops;
pub mod quant;
pub mod sampler;
pub mod serving;
pub mod source;
pub mod speculative;
pub mod tensor;
pub mod tokenizer;
pub mod tokenizer_gguf;

pub use backend::{Backend, BackendExt};
pub use config::{Architecture, ModelConfig};
pub use cpu::CpuBackend;
pub use dtype::DType;
pub use error::{Error, Result};
pub use model::{Logits, LogitsWanted, Model, SeqChunk};
pub use tensor::Tensor;
