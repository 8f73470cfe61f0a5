//! A model's `config.json`, read in both the transformers-4 spelling
//! (`rope_theta`, `rope_scaling`, `torch_dtype`) and the transformers-5 one
//! (`rope_parameters`, `dtype`), into one normalised `ModelConfig`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The decoder families Ferrum runs. They share one decoder with switches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Architecture {
    /// `(architectures[0] in config.json, model_type, our variant)`
    const TABLE: [(&'static str, &'static str, Architecture); 4] = [
        ("LlamaForCausalLM", "llama", Architecture::Llama),
        ("MistralForCausalLM", "mistral", Architecture::Mistral),
        ("Qwen2ForCausalLM", "qwen2", Architecture::Qwen2),
        ("Qwen3ForCausalLM", "qwen3", Architecture::Qwen3),
    ];

    pub const SUPPORTED_NAMES: [&'static str; 4] = [
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
    ];

    fn from_config(root: &Map<String, Value>) -> Result<Self> {
        let class = root
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|a| a.as_str());
        let model_type = root.get("model_type").and_then(|m| m.as_str());
        for (c, m, arch) in Self::TABLE {
            if class == Some(c) || (class.is_none() && model_type == Some(m)) {
                return Ok(arch);
            }
        }
        let found = class
            .or(model_type)
            .unwrap_or("<none: no `architectures` or `model_type`>");
        Err(Error::UnknownArchitecture {
            found: found.to_string(),
        })
    }

    pub fn hf_name(self) -> &'static str {
        Self::TABLE
            .iter()
            .find(|(_, _, a)| *a == self)
            .map_or("?", |(c, _, _)| c)
    }
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
    /// Per-head RMSNorm on q and k before rope (Qwen3).
    pub qk_norm: bool,
    /// Sliding window per layer (None: full attention on that layer).
    pub layer_windows: Vec<Option<usize>>,
    /// The dtype the checkpoint says it was saved in, if it says.
    pub dtype: Option<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            msg: format!("not valid JSON: {e}"),
        })?;
        let root = value.as_object().ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            msg: "top level is not a JSON object".into(),
        })?;
        Reader {
            root,
            path: path.to_path_buf(),
        }
        .parse()
    }

    /// Key and value heads times head_dim times 2 (k and v), in f32 elements.
    pub fn kv_floats_per_token(&self) -> usize {
        2 * self.num_layers * self.num_kv_heads * self.head_dim
    }
}

/// Reads typed fields with errors that name the file and the key.
struct Reader<'a> {
    root: &'a Map<String, Value>,
    path: PathBuf,
}

impl Reader<'_> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Config {
            path: self.path.clone(),
            msg: msg.into(),
        }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.root.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(format!("`{key}` must be a non-negative integer, got {v}"))),
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
        let architecture = Architecture::from_config(self.root)?;
        let hidden_size = self.usize("hidden_size")?;
        let num_heads = self.usize("num_attention_heads")?;
        let num_layers = self.usize("num_hidden_layers")?;
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
        let act = self
            .opt_str("hidden_act")
            .or(self.opt_str("hidden_activation"))
            .unwrap_or("silu");
        if act != "silu" {
            return Err(self.err(format!(
                "hidden_act {act:?} is not supported for {}",
                architecture.hf_name()
            )));
        }
        let attention_bias = self.opt_bool("attention_bias")?;
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            _ => {
                let b = attention_bias.unwrap_or(false);
                (b, b)
            }
        };
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
            rope: self.rope()?,
            max_position_embeddings,
            tie_word_embeddings: self.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias,
            o_bias,
            mlp_bias: self.opt_bool("mlp_bias")?.unwrap_or(false),
            qk_norm: architecture == Architecture::Qwen3,
            layer_windows: self.layer_windows(architecture, num_layers)?,
            dtype: self
                .opt_str("dtype")
                .or(self.opt_str("torch_dtype"))
                .map(str::to_string),
            bos_token_id: self.token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: self.token_ids("eos_token_id")?,
        };
        for (key, v) in [
            ("hidden_size", config.hidden_size),
            ("intermediate_size", config.intermediate_size),
            ("num_hidden_layers", config.num_layers),
            ("vocab_size", config.vocab_size),
            ("head_dim", config.head_dim),
        ] {
            if v == 0 {
                return Err(self.err(format!("`{key}` must be positive")));
            }
        }
        Ok(config)
    }

    /// transformers-5 keeps everything in `rope_parameters`; transformers-4
    /// has `rope_theta` at the top and an optional `rope_scaling` dict.
    fn rope(&self) -> Result<RopeConfig> {
        let params = match self.root.get("rope_parameters") {
            Some(Value::Object(p)) => Some(p),
            Some(Value::Null) | None => None,
            Some(v) => return Err(self.err(format!("`rope_parameters` must be an object, got {v}"))),
        };
        let scaling = match self.root.get("rope_scaling") {
            Some(Value::Object(s)) => Some(s),
            Some(Value::Null) | None => None,
            Some(v) => return Err(self.err(format!("`rope_scaling` must be an object, got {v}"))),
        };
        if params.is_some_and(|p| !p.contains_key("rope_type") && !p.contains_key("rope_theta")) {
            return Err(self.err("per-layer-type `rope_parameters` are not supported for this architecture"));
        }
        let theta = match params
            .map(|p| opt_f64_in(p, "rope_theta"))
            .transpose()
            .map_err(|m| self.err(m))?
        {
            Some(Some(t)) => t,
            _ => self.opt_f64("rope_theta")?.unwrap_or(10_000.0),
        };
        let partial_rotary_factor = match params.map(|p| opt_f64_in(p, "partial_rotary_factor")) {
            Some(Ok(Some(f))) => f,
            Some(Err(m)) => return Err(self.err(m)),
            _ => self.opt_f64("partial_rotary_factor")?.unwrap_or(1.0),
        };
        let spec = params.or(scaling);
        let rope_type = spec
            .and_then(|s| s.get("rope_type").or(s.get("type")))
            .and_then(|t| t.as_str())
            .unwrap_or("default");
        let f = |key: &str| -> Result<f64> {
            spec.and_then(|s| opt_f64_in(s, key).transpose())
                .transpose()
                .map_err(|m| self.err(m))?
                .ok_or_else(|| self.err(format!("rope type {rope_type:?} needs `{key}`")))
        };
        let scaling = match rope_type {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: f("factor")? },
            "llama3" => RopeScaling::Llama3 {
                factor: f("factor")?,
                low_freq_factor: f("low_freq_factor")?,
                high_freq_factor: f("high_freq_factor")?,
                original_max_position_embeddings: f("original_max_position_embeddings")?,
            },
            other => {
                return Err(self.err(format!(
                    "rope type {other:?} is not supported yet (supported: default, linear, llama3)"
                )));
            }
        };
        Ok(RopeConfig {
            theta,
            scaling,
            partial_rotary_factor,
        })
    }

    /// Which layers use a sliding window: `layer_types` when given; otherwise
    /// Mistral slides on every layer, Qwen2/3 only with `use_sliding_window`
    /// on layers >= `max_window_layers`.
    fn layer_windows(&self, arch: Architecture, num_layers: usize) -> Result<Vec<Option<usize>>> {
        let window = self.opt_usize("sliding_window")?;
        if let Some(Value::Array(types)) = self.root.get("layer_types") {
            if types.len() != num_layers {
                return Err(self.err(format!(
                    "`layer_types` has {} entries for {num_layers} layers",
                    types.len()
                )));
            }
            return types
                .iter()
                .map(|t| match t.as_str() {
                    Some("full_attention") => Ok(None),
                    Some("sliding_attention") => window
                        .map(Some)
                        .ok_or_else(|| self.err("a sliding_attention layer but no `sliding_window`")),
                    _ => Err(self.err(format!("unknown layer type {t}"))),
                })
                .collect();
        }
        Ok(match arch {
            Architecture::Mistral => vec![window; num_layers],
            Architecture::Qwen2 | Architecture::Qwen3 if self.opt_bool("use_sliding_window")? == Some(true) => {
                let first = self.opt_usize("max_window_layers")?.unwrap_or(num_layers);
                (0..num_layers)
                    .map(|l| if l >= first { window } else { None })
                    .collect()
            }
            _ => vec![None; num_layers],
        })
    }
}

fn opt_f64_in(map: &Map<String, Value>, key: &str) -> std::result::Result<Option<f64>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be a number, got {v}")),
    }
}

/// A token id given as an int, a list of ints, or null.
pub(crate) fn token_ids(value: Option<&Value>) -> std::result::Result<Vec<u32>, String> {
    let as_id = |v: &Value| {
        v.as_u64()
            .filter(|&n| n <= u32::MAX as u64)
            .map(|n| n as u32)
            .ok_or_else(|| format!("not a token id: {v}"))
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

    fn parse(json: &str) -> Result<ModelConfig> {
        ModelConfig::from_json_str(json, Path::new("config.json"))
    }

    const BASE: &str = r#""hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
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
        assert_eq!(
            c.rope,
            RopeConfig {
                theta: 10_000.0,
                scaling: RopeScaling::None,
                partial_rotary_factor: 1.0
            }
        );
    }

    #[test]
    fn architecture_switches() {
        let qwen2 = parse(&format!(
            r#"{{"architectures": ["Qwen2ForCausalLM"], {BASE}, "sliding_window": 8, "use_sliding_window": true, "max_window_layers": 1}}"#
        ))
        .unwrap();
        assert!(qwen2.qkv_bias && !qwen2.o_bias);
        assert_eq!(qwen2.layer_windows, [None, Some(8)]);
        let mistral = parse(&format!(
            r#"{{"architectures": ["MistralForCausalLM"], {BASE}, "sliding_window": 8}}"#
        ))
        .unwrap();
        assert_eq!(mistral.layer_windows, [Some(8), Some(8)]);
        let typed = parse(&format!(
            r#"{{"architectures": ["Qwen3ForCausalLM"], {BASE}, "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"]}}"#
        ))
        .unwrap();
        assert!(typed.qk_norm);
        assert_eq!(typed.layer_windows, [Some(4), None]);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let err = |json: String| parse(&json).unwrap_err().to_string();
        assert!(err(format!(r#"{{"architectures": ["BertModel"], {BASE}}}"#)).contains("supported: LlamaForCausalLM"));
        assert!(
            err(format!(
                r#"{{"model_type": "llama", {BASE}, "num_key_value_heads": 3}}"#
            ))
            .contains("multiple")
        );
        assert!(
            err(format!(
                r#"{{"model_type": "llama", {BASE}, "rope_scaling": {{"type": "su"}}}}"#
            ))
            .contains("not supported")
        );
        assert!(err(format!(r#"{{"model_type": "llama", {BASE}, "hidden_act": "relu"}}"#)).contains("relu"));
        assert!(err(r#"[1, 2]"#.into()).contains("not a JSON object"));
        assert!(err(format!(r#"{{"model_type": "llama", {BASE}, "vocab_size": -3}}"#)).contains("vocab_size"));
    }
}
