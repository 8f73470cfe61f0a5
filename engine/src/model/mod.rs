//! A loaded model: config, weights on a backend, and a batched forward pass.

mod batch;
mod decoder;
pub mod prequantized;
pub mod quant_policy;
mod recorded;
pub mod rope;
mod trace;
mod weights;

use std::path::Path;
use std::sync::Arc;

pub use batch::{BatchLayout, LogitsWanted, SeqChunk};
pub use quant_policy::QuantPolicy;
pub use trace::{Plan, plan};
pub use weights::widen_to_f32 as weights_widen;

use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::loader::WeightStore;
use crate::ops::OpKind;
use crate::sampler::DevicePick;
use crate::source::ModelSource;
use decoder::{Decoder, IdPick, PickInputs};
use recorded::{RecordedSteps, StepOutput};
use rope::RopeTable;
use weights::{DecoderWeights, WeightLoader};

pub struct Model {
    pub config: ModelConfig,
    backend: Arc<dyn Backend>,
    weights: DecoderWeights,
    rope_global: RopeTable,
    rope_local: Option<RopeTable>,
    embed_scale: Option<f32>,
    /// Decode steps replayed from recordings (CUDA graphs).
    recorded: RecordedSteps,
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
    /// Loads a Hugging Face folder or a GGUF file onto `backend`, after
    /// checking that the backend runs every op the model needs.
    pub fn load(path: &Path, backend: Arc<dyn Backend>) -> Result<Self> {
        let source = ModelSource::open(path)?;
        Self::from_store(source.config, &source.weights, backend)
    }

    pub fn from_store(config: ModelConfig, store: &WeightStore, backend: Arc<dyn Backend>) -> Result<Self> {
        Self::from_store_quantized(config, store, backend, &QuantPolicy::default())
    }

    /// Loads with the linear weights `policy` names quantized on the way in.
    pub fn from_store_quantized(
        config: ModelConfig,
        store: &WeightStore,
        backend: Arc<dyn Backend>,
        policy: &QuantPolicy,
    ) -> Result<Self> {
        Self::from_store_with_progress(config, store, backend, policy, &|_, _| true)
    }

    /// [`Model::from_store_quantized`], telling `progress` (layers loaded,
    /// layers) after each layer; when it answers false the load stops with
    /// [`Error::Cancelled`] and what was loaded is freed.
    pub fn from_store_with_progress(
        config: ModelConfig,
        store: &WeightStore,
        backend: Arc<dyn Backend>,
        policy: &QuantPolicy,
        progress: &dyn Fn(usize, usize) -> bool,
    ) -> Result<Self> {
        let missing: Vec<String> = trace::plan(&config, store, policy, backend.as_ref())?
            .ops
            .into_iter()
            .filter(|&(op, dtype)| !backend.supports(op, dtype))
            .map(|(op, dtype)| format!("{}({dtype})", op.name()))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Unsupported { backend: backend.name().to_string(), missing });
        }
        let b = backend.as_ref();
        let weights = WeightLoader { store, backend: b, holder: b, policy, dry: false, progress }.load(&config)?;
        let rope_global = RopeTable::new(backend.as_ref(), &config.rope, config.rotary_head_dim())?;
        let rope_local = config
            .rope_local
            .as_ref()
            .map(|r| RopeTable::new(backend.as_ref(), r, config.rotary_head_dim()))
            .transpose()?;
        let embed_scale = config.scale_embeddings.then(|| {
            // transformers multiplies by sqrt(hidden) cast to the weights' dtype
            let s = (config.hidden_size as f32).sqrt();
            match weights.embed.dtype() {
                DType::BF16 => half::bf16::from_f32(s).to_f32(),
                DType::F16 => half::f16::from_f32(s).to_f32(),
                DType::F32 | DType::F8E4M3 | DType::U32 | DType::Quant(_) => s,
            }
        });
        Ok(Model { config, backend, weights, rope_global, rope_local, embed_scale, recorded: RecordedSteps::new() })
    }

    /// Memory the weights take on the backend (quantized ones at packed size).
    pub fn weight_bytes(&self) -> usize {
        self.weights.bytes()
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// One step over a batch of sequence chunks; keys and values go into
    /// `cache`, and the logits asked for come back in chunk order.
    pub fn forward(&self, chunks: &[SeqChunk<'_>], cache: &KvCache) -> Result<Logits> {
        let layout = self.layout(chunks, cache)?;
        let vocab = self.config.vocab_size;
        if let Some(StepOutput::Logits(data)) = self.recorded.run(&self.decoder(), &layout, cache, None)? {
            return Ok(Logits { data, vocab });
        }
        Ok(Logits { data: self.decoder().forward(&layout, cache)?, vocab })
    }

    /// [`Model::forward`] for greedy decoding: the argmax of each logit row
    /// asked for (`sampler::argmax`'s rule: lowest index on ties, NaN never
    /// chosen), in chunk order, picked on the device (see `forward_picked`).
    pub fn forward_greedy(&self, chunks: &[SeqChunk<'_>], cache: &KvCache) -> Result<Vec<u32>> {
        let rows = chunks.iter().map(|c| c.logit_rows()).sum();
        self.forward_picked(chunks, cache, &vec![DevicePick::GREEDY; rows])
    }

    /// [`Model::forward`], then one token per logit row picked as `picks`
    /// says (`Sampler::device_pick`: the argmax, or a temperature draw), in
    /// chunk order. On the device (the `argmax` and `sample` ops) only the
    /// ids come back, one u32 per row instead of `vocab` f32s; on a backend
    /// without them, the logits come back and the same rule runs on the host.
    pub fn forward_picked(&self, chunks: &[SeqChunk<'_>], cache: &KvCache, picks: &[DevicePick]) -> Result<Vec<u32>> {
        let layout = self.layout(chunks, cache)?;
        if picks.len() != layout.logit_rows.len() {
            return Err(Error::Request(format!("{} picks for {} logit rows", picks.len(), layout.logit_rows.len())));
        }
        let greedy = picks.iter().all(|p| *p == DevicePick::GREEDY);
        let op = if greedy { OpKind::Argmax } else { OpKind::Sample };
        if self.backend.supports(op, DType::F32) {
            if let Some(StepOutput::Ids(ids)) = self.recorded.run(&self.decoder(), &layout, cache, Some(picks))? {
                return Ok(ids);
            }
            if greedy {
                return self.decoder().forward_ids(&layout, cache, &IdPick::Argmax);
            }
            let inputs = PickInputs::upload(self.backend.as_ref(), picks)?;
            return self.decoder().forward_ids(&layout, cache, &IdPick::Sample(&inputs));
        }
        let logits = Logits { data: self.decoder().forward(&layout, cache)?, vocab: self.config.vocab_size };
        Ok(picks
            .iter()
            .enumerate()
            .map(|(r, p)| crate::ops::sample_row(logits.row(r), p.temperature, p.uniform))
            .collect())
    }

    /// Whether pure decode steps replay recordings (CUDA graphs; on the CPU
    /// reference, op lists) where the backend records. On by default,
    /// unless `FERRUM_RECORD=0`; off drops the recordings.
    pub fn set_recording(&self, on: bool) {
        self.recorded.set_on(on);
    }

    /// How many decode-step recordings the model holds (one per batch shape).
    pub fn recordings(&self) -> usize {
        self.recorded.count()
    }

    /// Whether [`Model::forward_greedy`] picks ids on the device.
    pub fn argmax_on_device(&self) -> bool {
        self.backend.supports(OpKind::Argmax, DType::F32)
    }

    fn layout(&self, chunks: &[SeqChunk<'_>], cache: &KvCache) -> Result<BatchLayout> {
        let vocab = self.config.vocab_size;
        if let Some(&bad) = chunks.iter().flat_map(|c| c.tokens).find(|&&t| t as usize >= vocab) {
            return Err(Error::Request(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        BatchLayout::build(chunks, cache.block_size, cache.num_blocks)
    }

    fn decoder(&self) -> Decoder<'_> {
        Decoder {
            config: &self.config,
            backend: self.backend.as_ref(),
            weights: &self.weights,
            rope_global: &self.rope_global,
            rope_local: self.rope_local.as_ref(),
            embed_scale: self.embed_scale,
        }
    }
}
