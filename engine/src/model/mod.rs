//! A loaded model: config, weights on a backend, and a batched forward pass.

mod batch;
mod decoder;
pub mod rope;
mod weights;

use std::path::Path;
use std::sync::Arc;

pub use batch::{BatchLayout, LogitsWanted, SeqChunk};

use crate::backend::{Backend, BackendExt};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::loader::{ModelDir, WeightStore};
use crate::tensor::Tensor;
use decoder::Decoder;
use weights::{DecoderWeights, WeightLoader};

pub struct Model {
    pub config: ModelConfig,
    backend: Arc<dyn Backend>,
    weights: DecoderWeights,
    /// (rotary_dim / 2,) rotary frequencies
    inv_freq: Tensor,
    rope_scale: f32,
}

/// Logits for the rows a forward pass was asked for, [rows, vocab].
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    pub data: Vec<f32>,
    pub vocab: usize,
}

impl Logits {
    pub fn rows(&self) -> usize {
        self.data.len() / self.vocab
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }
}

impl Model {
    /// Loads a Hugging Face folder onto `backend`, after checking that the
    /// backend runs every op the model needs.
    pub fn load(dir: &Path, backend: Arc<dyn Backend>) -> Result<Self> {
        let dir = ModelDir::new(dir)?;
        let config = ModelConfig::from_file(&dir.config())?;
        let store = WeightStore::open_dir(&dir.root)?;
        Self::from_store(config, &store, backend)
    }

    pub fn from_store(config: ModelConfig, store: &WeightStore, backend: Arc<dyn Backend>) -> Result<Self> {
        let missing: Vec<String> = decoder::required_ops(store)?
            .into_iter()
            .filter(|&(op, dtype)| !backend.supports(op, dtype))
            .map(|(op, dtype)| format!("{}({dtype})", op.name()))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Unsupported {
                backend: backend.name().to_string(),
                missing,
            });
        }
        let weights = WeightLoader {
            store,
            backend: backend.as_ref(),
        }
        .load(&config)?;
        let (freqs, rope_scale) = rope::inv_freq(&config.rope, config.head_dim);
        let inv_freq = backend.upload_f32(&[freqs.len()], &freqs)?;
        Ok(Model {
            config,
            backend,
            weights,
            inv_freq,
            rope_scale,
        })
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// One step over a batch of sequence chunks; keys and values go into
    /// `cache`, and the logits asked for come back in chunk order.
    pub fn forward(&self, chunks: &[SeqChunk<'_>], cache: &KvCache) -> Result<Logits> {
        let vocab = self.config.vocab_size;
        if let Some(&bad) = chunks.iter().flat_map(|c| c.tokens).find(|&&t| t as usize >= vocab) {
            return Err(Error::Request(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let layout = BatchLayout::build(chunks, cache.block_size, cache.num_blocks)?;
        let decoder = Decoder {
            config: &self.config,
            backend: self.backend.as_ref(),
            weights: &self.weights,
            inv_freq: &self.inv_freq,
            rope_scale: self.rope_scale,
        };
        Ok(Logits {
            data: decoder.forward(&layout, cache)?,
            vocab,
        })
    }
}
