//! A model's `config.json`, read in both the transformers-4 spelling
//! (`rope_theta`, `rope_scaling`, `torch_dtype`) and the transformers-5 one
//! (`rope_parameters`, `dtype`), into one normalised `ModelConfig`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::Activation;

mod experts;
pub mod limits;

pub use crate::arch::{ArchSpec, Architecture, Routing, WindowRule};
pub use experts::{IndexerConfig, MlaConfig, MoeConfig};

fn architecture_of(root: &Map<String, Value>) -> Result<Architecture> {
    let class = root.get("architectures").and_then(|a| a.as_array()).and_then(|a| a.first()).and_then(|a| a.as_str());
    let model_type = root.get("model_type").and_then(|m| m.as_str());
    Architecture::from_hf(class, model_type).ok_or_else(|| Error::UnknownArchitecture {
        found: class.or(model_type).unwrap_or("<none: no `architectures` or `model_type`>").to_string(),
    })
}

/// How rotary frequencies are derived from the base ones.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1's band-wise interpolation.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// YaRN (gpt-oss, DeepSeek-V3): dimensions that rotate fewer than
    /// `beta_slow` times over the original context are interpolated by
    /// `factor`, those rotating more than `beta_fast` times kept, a linear
    /// ramp between; cos and sin are multiplied by `attention_factor`.
    Yarn {
        factor: f64,
        original_max_position_embeddings: f64,
        beta_fast: f64,
        beta_slow: f64,
        /// round the ramp's ends outwards to whole dimensions
        truncate: bool,
        attention_factor: f64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
    /// Fraction of head_dim that is rotated.
    pub partial_rotary_factor: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope: RopeConfig,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q, k and v projections (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama's `attention_bias` only).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Per-head RMSNorm on q and k before rope (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Sliding window per layer (None: full attention on that layer).
    pub layer_windows: Vec<Option<usize>>,
    /// Rope of sliding-window layers when it differs from `rope` (Gemma 3's local base).
    pub rope_local: Option<RopeConfig>,
    /// The gated MLP's activation.
    pub activation: Activation,
    /// Norm weights store `gain - 1` (Gemma).
    pub norm_unit_offset: bool,
    /// Embeddings are multiplied by sqrt(hidden_size) (Gemma).
    pub scale_embeddings: bool,
    /// Norms after attention and after the MLP too (Gemma 2 and 3).
    pub sandwich_norms: bool,
    /// Multiplies q·k: head_dim^-1/2, or query_pre_attn_scalar^-1/2 (Gemma 2 and 3).
    pub attention_scale: f32,
    pub attention_softcap: Option<f32>,
    pub final_logit_softcap: Option<f32>,
    /// The dtype the checkpoint says it was saved in, if it says.
    pub dtype: Option<String>,
    /// Mixture-of-experts layers (Mixtral, Qwen3-MoE, gpt-oss); `None` for dense models.
    pub moe: Option<MoeConfig>,
    /// A learned sink logit per attention head (gpt-oss).
    pub attention_sinks: bool,
    /// Multi-head latent attention (DeepSeek); then the cache has one kv head
    /// of `head_dim` = the latent plus the rotary key.
    pub mla: Option<MlaConfig>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// What the KV cache holds (not from the checkpoint: f32 unless the
    /// caller chooses f16, bf16 or fp8 before loading).
    pub kv_cache_dtype: DType,
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::Config { path: path.to_path_buf(), msg: format!("not valid JSON: {e}") })?;
        let root = value
            .as_object()
            .ok_or_else(|| Error::Config { path: path.to_path_buf(), msg: "top level is not a JSON object".into() })?;
        Reader { root, path: path.to_path_buf() }.parse()
    }

    /// Parameters the config implies: all of them, and those one token
    /// runs through (a MoE layer's router and its top-k experts only).
    pub fn parameter_counts(&self) -> ParameterCounts {
        let (total, active) = self.parameter_counts_wide();
        let narrow = |n: u128| usize::try_from(n).unwrap_or(usize::MAX);
        ParameterCounts { total: narrow(total), active: narrow(active) }
    }

    /// [`ModelConfig::parameter_counts`] in u128, which cannot overflow
    /// for sizes within [`limits`] (the reader checks the result against
    /// [`limits::MAX_PARAMETERS`]).
    fn parameter_counts_wide(&self) -> (u128, u128) {
        let n = |v: usize| v as u128;
        let (h, d) = (n(self.hidden_size), n(self.head_dim));
        let (q, kv) = (n(self.num_heads) * d, n(self.num_kv_heads) * d);
        let embed = n(self.vocab_size) * h * if self.tie_word_embeddings { 1 } else { 2 } + h;
        let bias = |on: bool, count: u128| if on { count } else { 0 };
        let attention = match &self.mla {
            Some(m) => {
                let heads = n(self.num_heads);
                let (rank, nope, rope, v) = (n(m.kv_lora_rank), n(m.nope), n(m.rope), n(m.v));
                let q = match m.q_lora_rank.map(n) {
                    Some(r) => h * r + r + r * heads * (nope + rope),
                    None => h * heads * (nope + rope),
                };
                // the indexer: wq_b, wk, k_norm's gain and bias, weights_proj
                let indexer = match (&m.indexer, m.q_lora_rank.map(n)) {
                    (Some(i), Some(r)) => {
                        let (ih, id) = (n(i.heads), n(i.head_dim));
                        r * ih * id + h * id + 2 * id + h * ih
                    }
                    _ => 0,
                };
                q + h * (rank + rope) + rank + rank * heads * (nope + v) + heads * v * h + indexer
            }
            None => h * (q + 2 * kv) + q * h + bias(self.qkv_bias, q + 2 * kv) + bias(self.o_bias, h),
        };
        let norms = h * if self.sandwich_norms { 4 } else { 2 }
            + if self.qk_norm { 2 * d } else { 0 }
            + bias(self.attention_sinks, n(self.num_heads));
        let inter = n(self.intermediate_size);
        let dense = 3 * h * inter + bias(self.mlp_bias, 2 * inter + h);
        let (mut total, mut active) = (embed, embed);
        for l in 0..self.num_layers {
            let shared = attention + norms;
            match &self.moe {
                Some(m) if m.is_moe_layer(l) => {
                    let (experts, inter) = (n(m.experts), n(m.expert_intermediate));
                    let expert = 3 * h * inter + bias(m.biases, 2 * inter + h);
                    let router = experts * h + bias(m.biases || m.choice_bias, experts);
                    let shared = shared + m.shared_intermediate.map_or(0, |i| 3 * h * n(i));
                    total += shared + router + experts * expert;
                    active += shared + router + n(m.route.top_k) * expert;
                }
                _ => {
                    total += shared + dense;
                    active += shared + dense;
                }
            }
        }
        (total, active)
    }

    /// Bytes of KV cache per token, in the cache's dtype.
    pub fn kv_bytes_per_token(&self) -> usize {
        self.kv_floats_per_token() * self.kv_cache_dtype.size_bytes()
    }

    /// Key and value heads times head_dim times 2 (k and v), in f32
    /// elements; with MLA the latent and rotary key once (values are a
    /// slice of it), and the indexer's key when there is one.
    pub fn kv_floats_per_token(&self) -> usize {
        let kv = if self.mla.is_some() { 1 } else { 2 };
        let index = self.mla.as_ref().map_or(0, MlaConfig::index_cache_width);
        self.num_layers * (kv * self.num_kv_heads * self.head_dim + index)
    }

    /// What full multi-head attention would cache per token, in f32
    /// elements: MLA's saving is this over [`ModelConfig::kv_floats_per_token`].
    pub fn mha_kv_floats_per_token(&self) -> usize {
        match &self.mla {
            Some(m) => self.num_layers * self.num_heads * (m.nope + m.rope + m.v),
            None => self.kv_floats_per_token(),
        }
    }

    /// The width of the rotary part rope tables are built for.
    pub fn rotary_head_dim(&self) -> usize {
        self.mla.as_ref().map_or(self.head_dim, |m| m.rope)
    }
}

/// How many parameters a model has, and how many one token uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParameterCounts {
    pub total: usize,
    pub active: usize,
}

/// Reads typed fields with errors that name the file and the key.
struct Reader<'a> {
    root: &'a Map<String, Value>,
    path: PathBuf,
}

impl Reader<'_> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Config { path: self.path.clone(), msg: msg.into() }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.root.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= limits::MAX_DIM as u64 => Ok(Some(n as usize)),
                Some(n) => Err(self.err(format!("`{key}` is {n}; no size in a config may exceed {}", limits::MAX_DIM))),
                None => Err(self.err(format!("`{key}` must be a non-negative integer, got {v}"))),
            },
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.err(format!("missing `{key}`")))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        opt_f64_in(self.root, key).map_err(|m| self.err(m))
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.root.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(format!("`{key}` must be true or false, got {v}"))),
        }
    }

    fn opt_str(&self, key: &str) -> Option<&str> {
        self.root.get(key).and_then(|v| v.as_str())
    }

    fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        token_ids(self.root.get(key)).map_err(|m| self.err(format!("`{key}`: {m}")))
    }

    fn parse(&self) -> Result<ModelConfig> {
        let architecture = architecture_of(self.root)?;
        let spec = architecture.spec();
        let hidden_size = self.usize("hidden_size")?;
        let num_heads = self.usize("num_attention_heads")?;
        let num_layers = self.usize("num_hidden_layers")?;
        if num_layers > limits::MAX_LAYERS {
            return Err(self.err(format!("{num_layers} layers; at most {}", limits::MAX_LAYERS)));
        }
        let num_kv_heads = self.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(self.err(format!(
                "num_attention_heads ({num_heads}) must be a positive multiple of num_key_value_heads ({num_kv_heads})"
            )));
        }
        let head_dim = match self.opt_usize("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => return Err(self.err("no `head_dim` and hidden_size is not a multiple of num_attention_heads")),
        };
        let activation = self.activation(spec)?;
        let mla = match spec.mla {
            true => {
                let mut m = self.mla()?;
                m.indexer = if spec.indexer { Some(self.indexer(&m)?) } else { None };
                Some(m)
            }
            false => None,
        };
        let (rope, rope_local) = self.ropes()?;
        let attention_scale = match (self.opt_f64("query_pre_attn_scalar")?, &mla) {
            (Some(s), _) if s > 0.0 => (1.0 / s.sqrt()) as f32,
            (Some(s), _) => return Err(self.err(format!("query_pre_attn_scalar must be positive, got {s}"))),
            // DeepSeek: yarn's mscale(factor, mscale_all_dim) squared folds into the scale
            (None, Some(m)) => ((m.nope + m.rope) as f64).powf(-0.5) as f32 * self.mla_softmax_mscale()? as f32,
            (None, None) => 1.0 / (head_dim as f32).sqrt(),
        };
        // with MLA the cache holds one "head": the latent and the rotary key
        let (num_kv_heads, head_dim) = match &mla {
            Some(m) => (1, m.cache_width()),
            None => (num_kv_heads, head_dim),
        };
        let gemma = spec.gemma;
        let attention_bias = self.opt_bool("attention_bias")?.unwrap_or(false);
        let (qkv_bias, o_bias) = if spec.qkv_bias { (true, false) } else { (attention_bias, attention_bias) };
        let max_position_embeddings = self.opt_usize("max_position_embeddings")?.unwrap_or(4096);
        let config = ModelConfig {
            architecture,
            hidden_size,
            intermediate_size: self.usize("intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size: self.usize("vocab_size")?,
            rms_norm_eps: self.opt_f64("rms_norm_eps")?.unwrap_or(1e-6) as f32,
            rope,
            max_position_embeddings,
            tie_word_embeddings: self.opt_bool("tie_word_embeddings")?.unwrap_or(gemma),
            qkv_bias,
            o_bias,
            mlp_bias: self.opt_bool("mlp_bias")?.unwrap_or(false),
            qk_norm: spec.qk_norm,
            layer_windows: self.layer_windows(spec, num_layers)?,
            rope_local,
            activation,
            norm_unit_offset: gemma,
            scale_embeddings: gemma,
            sandwich_norms: spec.sandwich_norms,
            attention_scale,
            attention_softcap: self.opt_f64("attn_logit_softcapping")?.map(|c| c as f32),
            final_logit_softcap: self.opt_f64("final_logit_softcapping")?.map(|c| c as f32),
            dtype: self.opt_str("dtype").or(self.opt_str("torch_dtype")).map(str::to_string),
            moe: spec.routing.map(|r| self.moe(r, spec.expert_biases, num_layers)).transpose()?,
            attention_sinks: spec.attention_sinks,
            mla,
            bos_token_id: self.token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: self.token_ids("eos_token_id")?,
            kv_cache_dtype: DType::F32,
        };
        limits::check(&config).map_err(|m| self.err(m))?;
        Ok(config)
    }

    /// The gated MLP's activation: SiLU for the Llama family, tanh-GELU for Gemma.
    fn activation(&self, spec: &ArchSpec) -> Result<Activation> {
        let named = self.opt_str("hidden_activation").or(self.opt_str("hidden_act"));
        // gpt-oss: a SwiGLU with a clamp and its own slope
        if let Some(limit) = self.opt_f64("swiglu_limit")? {
            let alpha = self.opt_f64("swiglu_alpha")?.unwrap_or(1.702);
            return Ok(Activation::SwigluClamped { alpha: alpha as f32, limit: limit as f32 });
        }
        match (spec.gemma, named) {
            (false, None | Some("silu")) => Ok(Activation::Silu),
            // Gemma 1 configs say "gelu" but transformers runs the tanh approximation
            (true, None | Some("gelu_pytorch_tanh" | "gelu_tanh" | "gelu")) => Ok(Activation::GeluTanh),
            (_, Some(other)) => Err(self.err(format!("activation {other:?} is not supported for {}", spec.hf_class))),
        }
    }

    /// The global rope and, when sliding layers differ, the local one.
    /// transformers-5 keeps everything in `rope_parameters` (per layer type
    /// for Gemma 3); transformers-4 has `rope_theta` at the top, an optional
    /// `rope_scaling` dict and Gemma 3's `rope_local_base_freq`.
    fn ropes(&self) -> Result<(RopeConfig, Option<RopeConfig>)> {
        let object = |key: &str| match self.root.get(key) {
            Some(Value::Object(p)) => Ok(Some(p)),
            Some(Value::Null) | None => Ok(None),
            Some(v) => Err(self.err(format!("`{key}` must be an object, got {v}"))),
        };
        let params = object("rope_parameters")?;
        let scaling = object("rope_scaling")?;
        let partial = self.opt_f64("partial_rotary_factor")?.unwrap_or(1.0);
        let top_theta = self.opt_f64("rope_theta")?.unwrap_or(10_000.0);
        if let Some(p) = params.filter(|p| p.contains_key("full_attention")) {
            let per_type = |key: &str| -> Result<Option<RopeConfig>> {
                match p.get(key) {
                    Some(Value::Object(spec)) => self.rope(Some(spec), top_theta, partial).map(Some),
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => Err(self.err(format!("rope_parameters.{key} must be an object, got {v}"))),
                }
            };
            let global = per_type("full_attention")?.expect("checked contains_key");
            return Ok((global, per_type("sliding_attention")?));
        }
        let global = self.rope(params.or(scaling), top_theta, partial)?;
        let local = self.opt_f64("rope_local_base_freq")?.map(|theta| RopeConfig {
            theta,
            scaling: RopeScaling::None,
            partial_rotary_factor: partial,
        });
        Ok((global, local))
    }

    fn rope(&self, spec: Option<&Map<String, Value>>, top_theta: f64, partial: f64) -> Result<RopeConfig> {
        let get = |key: &str| -> Result<Option<f64>> {
            spec.map(|s| opt_f64_in(s, key)).transpose().map(Option::flatten).map_err(|m| self.err(m))
        };
        let theta = get("rope_theta")?.unwrap_or(top_theta);
        let partial_rotary_factor = get("partial_rotary_factor")?.unwrap_or(partial);
        let rope_type =
            spec.and_then(|s| s.get("rope_type").or(s.get("type"))).and_then(|t| t.as_str()).unwrap_or("default");
        let need = |key: &str| -> Result<f64> {
            get(key)?.ok_or_else(|| self.err(format!("rope type {rope_type:?} needs `{key}`")))
        };
        let scaling = match rope_type {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: need("factor")? },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: need("original_max_position_embeddings")?,
            },
            "yarn" => {
                let factor = match get("factor")? {
                    Some(f) => f,
                    None => {
                        self.opt_f64("max_position_embeddings")?.unwrap_or(4096.0)
                            / need("original_max_position_embeddings")?
                    }
                };
                // transformers' get_mscale: 0.1 * m * ln(factor) + 1 above a factor of 1
                let mscale = |m: f64| if factor <= 1.0 { 1.0 } else { 0.1 * m * factor.ln() + 1.0 };
                let attention_factor = match (get("attention_factor")?, get("mscale")?, get("mscale_all_dim")?) {
                    (Some(a), _, _) => a,
                    (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => mscale(m) / mscale(all),
                    _ => mscale(1.0),
                };
                let truncate = spec.and_then(|s| s.get("truncate")).and_then(|t| t.as_bool()).unwrap_or(true);
                RopeScaling::Yarn {
                    factor,
                    original_max_position_embeddings: need("original_max_position_embeddings")?,
                    beta_fast: get("beta_fast")?.filter(|&b| b != 0.0).unwrap_or(32.0),
                    beta_slow: get("beta_slow")?.filter(|&b| b != 0.0).unwrap_or(1.0),
                    truncate,
                    attention_factor,
                }
            }
            other => {
                return Err(self.err(format!(
                    "rope type {other:?} is not supported yet (supported: default, linear, llama3, yarn)"
                )));
            }
        };
        Ok(RopeConfig { theta, scaling, partial_rotary_factor })
    }

    /// Which layers use a sliding window: `layer_types` when given, else
    /// the architecture's rule.
    fn layer_windows(&self, spec: &ArchSpec, num_layers: usize) -> Result<Vec<Option<usize>>> {
        let window = self.opt_usize("sliding_window")?;
        if let Some(Value::Array(types)) = self.root.get("layer_types") {
            if types.len() != num_layers {
                return Err(self.err(format!("`layer_types` has {} entries for {num_layers} layers", types.len())));
            }
            return types
                .iter()
                .map(|t| match t.as_str() {
                    Some("full_attention") => Ok(None),
                    // DeepSeek-V3.2: full attention narrowed by the indexer
                    Some("indexed_attention") if spec.indexer => Ok(None),
                    Some("sliding_attention") => {
                        window.map(Some).ok_or_else(|| self.err("a sliding_attention layer but no `sliding_window`"))
                    }
                    _ => Err(self.err(format!("unknown layer type {t}"))),
                })
                .collect();
        }
        Ok(match spec.windows {
            WindowRule::Every => vec![window; num_layers],
            WindowRule::FromMaxWindowLayers if self.opt_bool("use_sliding_window")? == Some(true) => {
                let first = self.opt_usize("max_window_layers")?.unwrap_or(num_layers);
                (0..num_layers).map(|l| if l >= first { window } else { None }).collect()
            }
            WindowRule::Period(default) => {
                let period = self.opt_usize("sliding_window_pattern")?.unwrap_or(default).max(1);
                (0..num_layers).map(|l| if (l + 1) % period != 0 { window } else { None }).collect()
            }
            WindowRule::FromMaxWindowLayers | WindowRule::None => vec![None; num_layers],
        })
    }
}

fn opt_f64_in(map: &Map<String, Value>, key: &str) -> std::result::Result<Option<f64>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| format!("`{key}` must be a number, got {v}")),
    }
}

/// A token id given as an int, a list of ints, or null.
pub(crate) fn token_ids(value: Option<&Value>) -> std::result::Result<Vec<u32>, String> {
    let as_id = |v: &Value| {
        v.as_u64().filter(|&n| n <= u32::MAX as u64).map(|n| n as u32).ok_or_else(|| format!("not a token id: {v}"))
    };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(as_id).collect(),
        Some(v) => Ok(vec![as_id(v)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse(json: &str) -> Result<ModelConfig> {
        ModelConfig::from_json_str(json, Path::new("config.json"))
    }

    pub(super) const BASE: &str = r#""hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_hidden_layers": 2, "vocab_size": 100"#;

    #[test]
    fn transformers_4_and_5_spellings_give_the_same_config() {
        let v4 = parse(&format!(
            r#"{{"architectures": ["LlamaForCausalLM"], {BASE}, "rope_theta": 500000.0, "torch_dtype": "bfloat16",
            "rope_scaling": {{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}, "eos_token_id": [7, 9]}}"#
        ))
        .unwrap();
        let v5 = parse(&format!(
            r#"{{"architectures": ["LlamaForCausalLM"], {BASE}, "dtype": "bfloat16",
            "rope_parameters": {{"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}, "eos_token_id": [7, 9]}}"#
        ))
        .unwrap();
        assert_eq!(v4, v5);
        assert_eq!(v4.rope.theta, 500000.0);
        assert_eq!(v4.eos_token_ids, [7, 9]);
        assert_eq!(v4.dtype.as_deref(), Some("bfloat16"));
        assert!(matches!(v4.rope.scaling, RopeScaling::Llama3 { factor: 8.0, .. }));
    }

    #[test]
    fn defaults_fill_what_older_configs_omit() {
        let c = parse(&format!(r#"{{"model_type": "llama", {BASE}, "eos_token_id": 2}}"#)).unwrap();
        assert_eq!(c.head_dim, 16, "hidden / heads when head_dim is missing");
        assert_eq!(c.num_kv_heads, 4, "kv heads default to heads");
        assert_eq!(c.eos_token_ids, [2]);
        assert_eq!(c.rope, RopeConfig { theta: 10_000.0, scaling: RopeScaling::None, partial_rotary_factor: 1.0 });
    }

    #[test]
    fn architecture_switches() {
        let qwen2 = parse(&format!(
            r#"{{"architectures": ["Qwen2ForCausalLM"], {BASE}, "sliding_window": 8, "use_sliding_window": true, "max_window_layers": 1}}"#
        ))
        .unwrap();
        assert!(qwen2.qkv_bias && !qwen2.o_bias);
        assert_eq!(qwen2.layer_windows, [None, Some(8)]);
        let mistral =
            parse(&format!(r#"{{"architectures": ["MistralForCausalLM"], {BASE}, "sliding_window": 8}}"#)).unwrap();
        assert_eq!(mistral.layer_windows, [Some(8), Some(8)]);
        let typed = parse(&format!(
            r#"{{"architectures": ["Qwen3ForCausalLM"], {BASE}, "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"]}}"#
        ))
        .unwrap();
        assert!(typed.qk_norm);
        assert_eq!(typed.layer_windows, [Some(4), None]);
    }

    #[test]
    fn gemma3_in_both_spellings() {
        let v5 = parse(&format!(
            r#"{{"architectures": ["Gemma3ForCausalLM"], {BASE}, "num_hidden_layers": 6, "sliding_window": 8,
            "query_pre_attn_scalar": 256, "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention",
            "sliding_attention", "sliding_attention", "full_attention"],
            "rope_parameters": {{"full_attention": {{"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0}},
            "sliding_attention": {{"rope_type": "default", "rope_theta": 10000.0}}}}}}"#
        ))
        .unwrap();
        let v4 = parse(&format!(
            r#"{{"architectures": ["Gemma3ForCausalLM"], {BASE}, "num_hidden_layers": 6, "sliding_window": 8,
            "query_pre_attn_scalar": 256, "sliding_window_pattern": 6, "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0, "rope_scaling": {{"rope_type": "linear", "factor": 8.0}}}}"#
        ))
        .unwrap();
        assert_eq!(v4, v5);
        assert_eq!(v5.layer_windows, [Some(8), Some(8), Some(8), Some(8), Some(8), None]);
        assert_eq!(v5.rope.scaling, RopeScaling::Linear { factor: 8.0 });
        assert_eq!(v5.rope_local.as_ref().map(|r| r.theta), Some(10_000.0));
        assert_eq!(v5.attention_scale, 1.0 / 16.0);
        assert!(
            v5.qk_norm && v5.sandwich_norms && v5.norm_unit_offset && v5.scale_embeddings && v5.tie_word_embeddings
        );
        assert_eq!(v5.activation, Activation::GeluTanh);
    }

    #[test]
    fn gemma2_alternates_layers_without_layer_types() {
        let c = parse(&format!(
            r#"{{"architectures": ["Gemma2ForCausalLM"], {BASE}, "num_hidden_layers": 4, "sliding_window": 16,
            "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}}"#
        ))
        .unwrap();
        assert_eq!(c.layer_windows, [Some(16), None, Some(16), None]);
        assert_eq!((c.attention_softcap, c.final_logit_softcap), (Some(50.0), Some(30.0)));
        assert!(c.rope_local.is_none());
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let err = |json: String| parse(&json).unwrap_err().to_string();
        assert!(err(format!(r#"{{"architectures": ["BertModel"], {BASE}}}"#)).contains("supported: LlamaForCausalLM"));
        assert!(err(format!(r#"{{"model_type": "llama", {BASE}, "num_key_value_heads": 3}}"#)).contains("multiple"));
        assert!(
            err(format!(r#"{{"model_type": "llama", {BASE}, "rope_scaling": {{"type": "su"}}}}"#))
                .contains("not supported")
        );
        assert!(err(format!(r#"{{"model_type": "llama", {BASE}, "hidden_act": "relu"}}"#)).contains("relu"));
        assert!(err(r#"[1, 2]"#.into()).contains("not a JSON object"));
        assert!(err(format!(r#"{{"model_type": "llama", {BASE}, "vocab_size": -3}}"#)).contains("vocab_size"));
    }
}
