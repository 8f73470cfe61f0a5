//! Flags shared by the commands that load a model, and what they load.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use ferrum_engine::generate::GenerateOptions;
use ferrum_engine::memory::{MemoryNeed, Workload};
use ferrum_engine::model::QuantPolicy;
use ferrum_engine::ops::OpKind;
use ferrum_engine::quant::QuantFormat;
use ferrum_engine::sampler::SamplingParams;
use ferrum_engine::source::ModelSource;
use ferrum_engine::speculative::{Drafter, Speculation};
use ferrum_engine::{DType, Model, ModelConfig};

use ferrum_backends::{self as backends, BackendChoice};

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A Hugging Face model folder (config.json, *.safetensors, tokenizer.json) or a
    /// .gguf file; without it, the default model (pulled on first use).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// Threads of the CPU backend (default: the physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Quantize linear weights on load: nvfp4, mxfp4, fp8, int8, int4[:gN][:asym], ...
    /// (`ferrum eval` takes a comma-separated list to compare).
    #[arg(long, value_delimiter = ',')]
    pub quant: Vec<QuantFormat>,
    /// Leave weights whose name matches unquantized (repeatable; `lm_head` always is).
    #[arg(long)]
    pub quant_exclude: Vec<String>,
    /// What the KV cache holds: f32, f16, bf16 or fp8 (E4M3); auto: f16
    /// where the backend runs it, else f32.
    #[arg(long, default_value = "auto", value_parser = parse_cache_dtype)]
    pub kv_cache_dtype: CacheDtype,
}

/// `--kv-cache-dtype`: a dtype, or the backend's best.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheDtype {
    Auto,
    Fixed(DType),
}

fn parse_cache_dtype(s: &str) -> std::result::Result<CacheDtype, String> {
    match s {
        "auto" => Ok(CacheDtype::Auto),
        other => other.parse().map(CacheDtype::Fixed),
    }
}

impl CacheDtype {
    /// The dtype on `backend`: auto takes f16 where both cache ops run it.
    pub fn on(self, backend: &dyn ferrum_engine::Backend) -> Result<DType> {
        let runs = |d: DType| [OpKind::KvStore, OpKind::Attention].iter().all(|&op| backend.supports(op, d));
        match self {
            CacheDtype::Auto => Ok(if runs(DType::F16) { DType::F16 } else { DType::F32 }),
            CacheDtype::Fixed(d) if runs(d) => Ok(d),
            CacheDtype::Fixed(d) => anyhow::bail!("the {} backend cannot hold a KV cache of {d}", backend.name()),
        }
    }
}

/// A model on its backend with the files around it.
pub struct Loaded {
    pub source: ModelSource,
    pub model: Model,
}

impl ModelArgs {
    /// The model path given, or the default model (pulled on first use).
    pub fn path(&self) -> Result<PathBuf> {
        match &self.model {
            Some(path) => Ok(path.clone()),
            None => ferrum_hub::resolve(ferrum_hub::DEFAULT_MODEL),
        }
    }

    /// The one --quant given (commands other than eval take at most one).
    pub fn single_quant(&self) -> Result<Option<QuantFormat>> {
        match self.quant.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => anyhow::bail!("this command takes one --quant format (ferrum eval compares several)"),
        }
    }

    /// The model, with room for one sequence of the full context.
    pub fn load(&self) -> Result<Loaded> {
        self.load_for(Workload::one_sequence)
    }

    /// The model, refused before loading when its weights, KV cache and
    /// activations for the workload `work` gives cannot fit.
    pub fn load_for(&self, work: impl FnOnce(&ModelConfig) -> Workload) -> Result<Loaded> {
        let quant = self.single_quant()?;
        let path = self.path()?;
        let source = ModelSource::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let model = self.load_variant(&source, quant, work)?;
        Ok(Loaded { source, model })
    }

    /// The quantization policy of `quant` and the exclude flags.
    pub fn policy(&self, quant: Option<QuantFormat>) -> QuantPolicy {
        QuantPolicy::new(quant, &self.quant_exclude)
    }

    /// `source`'s config as it will run on `backend`: the KV cache dtype chosen.
    pub fn config_on(&self, source: &ModelSource, backend: &dyn ferrum_engine::Backend) -> Result<ModelConfig> {
        let mut config = source.config.clone();
        config.kv_cache_dtype = self.kv_cache_dtype.on(backend)?;
        Ok(config)
    }

    /// [`ModelArgs::load_variant`] with the KV cache of `kv` rather than `--kv-cache-dtype`.
    pub fn load_variant_with_cache(
        &self,
        source: &ModelSource,
        quant: Option<QuantFormat>,
        kv: CacheDtype,
        work: impl FnOnce(&ModelConfig) -> Workload,
    ) -> Result<Model> {
        ModelArgs { kv_cache_dtype: kv, ..self.clone() }.load_variant(source, quant, work)
    }

    /// The model of `source` on the chosen backend, quantized to `quant`,
    /// refused first when it cannot fit with the workload `work` gives.
    pub fn load_variant(
        &self,
        source: &ModelSource,
        quant: Option<QuantFormat>,
        work: impl FnOnce(&ModelConfig) -> Workload,
    ) -> Result<Model> {
        let backend = backends::open(self.backend, self.threads)?;
        let policy = self.policy(quant);
        let config = self.config_on(source, backend.as_ref())?;
        let not_loading = || format!("not loading {}", source.path.display());
        let need = MemoryNeed::of(&config, &source.weights, &policy, backend.as_ref(), work(&config))
            .with_context(not_loading)?;
        need.check(backend.memory_available(), &backend.device_description()).with_context(not_loading)?;
        let started = std::time::Instant::now();
        let kv = config.kv_cache_dtype;
        let model = Model::from_store_quantized(config, &source.weights, backend, &policy)
            .with_context(|| format!("loading {}", source.path.display()))?;
        eprintln!(
            "[loaded {} ({}{}) on {} in {:.2} s: weights {:.1} MiB, KV cache {kv}]",
            source.path.display(),
            source.config.architecture.hf_name(),
            quant.map_or(String::new(), |q| format!(", {q}")),
            model.backend().name(),
            started.elapsed().as_secs_f64(),
            model.weight_bytes() as f64 / (1 << 20) as f64
        );
        Ok(model)
    }
}

/// Sampling flags; any flag not given falls back to generation_config.json.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Greedy decoding (same as --temperature 0).
    #[arg(long)]
    pub greedy: bool,
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long)]
    pub min_p: Option<f32>,
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    #[command(flatten)]
    pub speculation: SpeculationArgs,
}

/// Speculative decoding flags.
#[derive(Args, Debug, Clone)]
pub struct SpeculationArgs {
    /// Speculative decoding by prompt lookup: guess up to K tokens per step
    /// from earlier text (prompt and output) and verify them in one forward
    /// pass; output is unchanged (greedy: token for token). 0: off.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub speculate: usize,
    /// Longest run of last tokens looked up in the earlier text.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub ngram_max: usize,
    /// Guess with this smaller model (same tokenizer) instead of by lookup:
    /// a Hugging Face folder or a .gguf file, run on the same backend.
    #[arg(long, value_name = "MODEL")]
    pub draft_model: Option<PathBuf>,
}

impl SpeculationArgs {
    /// The draft model for `target`, loaded as `model` says (backend,
    /// threads, KV cache dtype), when `--draft-model` is given.
    pub fn drafter(&self, model: &ModelArgs, target: &Model) -> Result<Option<Drafter>> {
        let Some(path) = &self.draft_model else { return Ok(None) };
        if self.speculate == 0 {
            anyhow::bail!("--draft-model needs --speculate K (the tokens it guesses per step)");
        }
        let args =
            ModelArgs { model: Some(path.clone()), quant: Vec::new(), quant_exclude: Vec::new(), ..model.clone() };
        let source = ModelSource::open(path).with_context(|| format!("opening the draft model {}", path.display()))?;
        let draft = args.load_variant(&source, None, Workload::one_sequence)?;
        Ok(Some(Drafter::new(Arc::new(draft), target)?))
    }

    pub fn speculation(&self) -> Result<Option<Speculation>> {
        if self.speculate == 0 {
            return Ok(None);
        }
        let spec = Speculation { tokens: self.speculate, ngram_max: self.ngram_max, ngram_min: 1 };
        spec.validate().map_err(anyhow::Error::msg)?;
        Ok(Some(spec))
    }
}

impl SamplingArgs {
    pub fn options(&self, model_args: &ModelArgs, loaded: &Loaded) -> Result<GenerateOptions> {
        let mut p: SamplingParams = loaded.source.generation.sampling();
        if let Some(t) = self.temperature {
            p.temperature = t;
        }
        if self.greedy {
            p.temperature = 0.0;
        }
        p.top_k = self.top_k.unwrap_or(p.top_k);
        p.top_p = self.top_p.unwrap_or(p.top_p);
        p.min_p = self.min_p.unwrap_or(p.min_p);
        p.repetition_penalty = self.repetition_penalty.unwrap_or(p.repetition_penalty);
        p.presence_penalty = self.presence_penalty;
        p.frequency_penalty = self.frequency_penalty;
        p.seed = self.seed;
        p.validate().map_err(anyhow::Error::msg)?;
        Ok(GenerateOptions {
            max_tokens: self.max_tokens.or(loaded.source.generation.max_new_tokens).unwrap_or(256),
            sampling: p,
            eos_token_ids: loaded.source.eos_token_ids(),
            stop_strings: self.stop.clone(),
            speculation: self.speculation.speculation()?,
            draft: self.speculation.drafter(model_args, &loaded.model)?,
        })
    }
}

/// Token ids given on the command line.
#[derive(Clone, Debug)]
pub struct TokenIds(pub Vec<u32>);

/// "1,2,3" -> [1, 2, 3]
pub fn parse_ids(s: &str) -> Result<TokenIds, String> {
    s.split(',')
        .map(|t| t.trim().parse::<u32>().map_err(|e| format!("bad token id {t:?}: {e}")))
        .collect::<Result<_, _>>()
        .map(TokenIds)
}
