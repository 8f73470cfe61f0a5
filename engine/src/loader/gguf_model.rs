//! A GGUF file read as a Hugging Face model: the config from `{arch}.*`
//! metadata, tensors renamed to Hugging Face names with llama.cpp's
//! conventions undone (the Q/K row permutation of `llama` models, Gemma's
//! norms stored as 1 + w), and the vocabulary for the tokenizer.

use std::collections::BTreeMap;

use crate::config::{
    Architecture, IndexerConfig, MlaConfig, ModelConfig, MoeConfig, RopeConfig, RopeScaling, Routing, WindowRule,
    limits,
};
use crate::error::{Error, Result};
use crate::loader::gguf::GgufFile;
use crate::ops::{Activation, ExpertGroups, MoeRoute, RouterScoring};
use crate::tokenizer_gguf::GgufVocab;

/// What to do to a GGUF tensor to get the Hugging Face one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    None,
    /// llama.cpp's converter interleaves the two rotary halves of each head's
    /// rows (`permute(w, heads)`); put them back.
    UnpermuteRows {
        heads: usize,
    },
    /// Gemma norms were stored as 1 + w.
    MinusOne,
}

/// A Hugging Face tensor name's source in the GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorRef {
    pub gguf_name: String,
    pub transform: Transform,
    /// The shape under the Hugging Face name: as stored, except that a
    /// layer's experts [E, rows, cols] read as one matrix [E * rows, cols].
    pub shape: Vec<usize>,
}

fn bad(file: &GgufFile, msg: String) -> Error {
    Error::Config { path: file.path.clone(), msg }
}

pub fn architecture(file: &GgufFile) -> Result<Architecture> {
    let name = file.architecture()?;
    let experts = file.get_opt::<usize>(&format!("{name}.expert_count"))?.unwrap_or(0);
    Architecture::from_gguf(name, experts > 0).ok_or_else(|| Error::UnknownArchitecture {
        found: format!("{name} (GGUF; supported: {})", Architecture::gguf_names()),
    })
}

/// The model config from `{arch}.*` and `tokenizer.ggml.*` metadata.
pub fn config(file: &GgufFile) -> Result<ModelConfig> {
    let arch = architecture(file)?;
    let prefix = file.architecture()?.to_string();
    let key = |k: &str| format!("{prefix}.{k}");
    let opt = |k: &str| -> Result<Option<usize>> { bounded(file, &key(k), file.get_opt::<usize>(&key(k))?) };
    let need = |k: &str| -> Result<usize> { opt(k)?.ok_or_else(|| bad(file, format!("no {}", key(k)))) };
    let optf = |k: &str| -> Result<Option<f64>> { file.get_opt::<f64>(&key(k)) };

    let hidden_size = need("embedding_length")?;
    let num_heads = need("attention.head_count")?;
    let num_kv_heads = opt("attention.head_count_kv")?.unwrap_or(num_heads);
    if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(bad(file, format!("{num_heads} heads are not a multiple of {num_kv_heads} kv heads")));
    }
    let head_dim = opt("attention.key_length")?.unwrap_or(hidden_size / num_heads);
    // llama.cpp may count DeepSeek's multi-token-prediction layers as blocks
    // at the end; the decoder does not run them
    let num_layers = need("block_count")?.saturating_sub(opt("nextn_predict_layers")?.unwrap_or(0));
    if num_layers > limits::MAX_LAYERS {
        return Err(bad(file, format!("{num_layers} layers; at most {}", limits::MAX_LAYERS)));
    }
    let vocab_size = match opt("vocab_size")? {
        Some(v) => v,
        None => file.get_str_array("tokenizer.ggml.tokens")?.len(),
    };
    let spec = arch.spec();
    let mla = if spec.mla { Some(mla(file, &prefix, spec.indexer)?) } else { None };
    let rotary_dim = opt("rope.dimension_count")?.unwrap_or(head_dim);
    let theta = optf("rope.freq_base")?.unwrap_or(10_000.0);
    let scaling = match file.get_opt::<&str>(&key("rope.scaling.type"))? {
        None | Some("none") => RopeScaling::None,
        Some("linear") => RopeScaling::Linear {
            factor: optf("rope.scaling.factor")?.ok_or_else(|| bad(file, "linear rope without a factor".into()))?,
        },
        Some("yarn") => {
            let factor = optf("rope.scaling.factor")?.ok_or_else(|| bad(file, "yarn rope without a factor".into()))?;
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: need("rope.scaling.original_context_length")? as f64,
                beta_fast: optf("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0),
                beta_slow: optf("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0),
                // gpt-oss's published yarn does not round its ramp outwards
                truncate: arch != Architecture::GptOss,
                // DeepSeek's yarn scales the softmax (mscale^2 below), not the rotation
                attention_factor: match (&mla, optf("rope.scaling.yarn_attn_factor")?) {
                    (Some(_), _) => 1.0,
                    (None, Some(a)) => a,
                    (None, None) => 0.1 * factor.ln() + 1.0,
                },
            }
        }
        Some(other) => return Err(bad(file, format!("rope scaling {other:?} is not supported yet"))),
    };
    if file.tensor("rope_freqs.weight").is_some() {
        return Err(bad(file, "per-frequency rope factors (rope_freqs.weight) are not supported yet".into()));
    }
    // MLA: the rope table covers the rotary key; the cache holds one "head",
    // the latent and the rotary key; the softmax scale gains yarn's mscale^2
    let (num_kv_heads, head_dim, rotary_fraction, mla_scale) = match &mla {
        Some(m) => {
            let mscale = match (&scaling, optf("rope.scaling.yarn_log_multiplier")?) {
                (RopeScaling::Yarn { factor, .. }, Some(log_mul)) if *factor > 1.0 => 1.0 + log_mul * factor.ln(),
                _ => 1.0,
            };
            let scale = ((m.nope + m.rope) as f64).powf(-0.5) * mscale * mscale;
            (1, m.cache_width(), 1.0, Some(scale as f32))
        }
        None => (num_kv_heads, head_dim, rotary_dim as f64 / head_dim as f64, None),
    };
    let rope = RopeConfig { theta, scaling, partial_rotary_factor: rotary_fraction };
    let window = opt("attention.sliding_window")?;
    let layer_windows = layer_windows(file, &key("attention.sliding_window_pattern"), arch, num_layers, window)?;
    let rope_local = match (arch, optf("rope.freq_base_swa")?) {
        (_, Some(theta)) => Some(theta),
        // llama.cpp's gemma3 default local base
        (Architecture::Gemma3, None) => Some(10_000.0),
        _ => None,
    }
    .map(|theta| RopeConfig { theta, scaling: RopeScaling::None, partial_rotary_factor: 1.0 });
    let gemma = spec.gemma;
    let qkv_bias = file.tensor("blk.0.attn_q.bias").is_some();
    let moe = match spec.routing {
        Some(routing) => Some(moe(file, &prefix, num_layers, routing, spec.expert_biases)?),
        None => None,
    };
    let eos = file.get_opt::<u32>("tokenizer.ggml.eos_token_id")?;
    let config = ModelConfig {
        architecture: arch,
        hidden_size,
        intermediate_size: need("feed_forward_length")?,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab_size,
        rms_norm_eps: optf("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-6) as f32,
        rope,
        max_position_embeddings: opt("context_length")?.unwrap_or(4096),
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        qkv_bias,
        o_bias: file.tensor("blk.0.attn_output.bias").is_some(),
        mlp_bias: false,
        qk_norm: file.tensor("blk.0.attn_q_norm.weight").is_some(),
        layer_windows,
        rope_local,
        activation: match arch {
            _ if gemma => Activation::GeluTanh,
            // llama.cpp fixes gpt-oss's clamped SwiGLU at the published values
            Architecture::GptOss => Activation::SwigluClamped { alpha: 1.702, limit: 7.0 },
            _ => Activation::Silu,
        },
        norm_unit_offset: gemma,
        scale_embeddings: gemma,
        sandwich_norms: spec.sandwich_norms,
        // `attention.scale` is the q·k multiplier (Gemma's query_pre_attn_scalar^-1/2)
        attention_scale: match mla_scale {
            Some(scale) => scale,
            None => optf("attention.scale")?.map_or(1.0 / (head_dim as f32).sqrt(), |s| s as f32),
        },
        attention_softcap: optf("attn_logit_softcapping")?.map(|c| c as f32),
        final_logit_softcap: optf("final_logit_softcapping")?.map(|c| c as f32),
        dtype: None,
        moe,
        attention_sinks: spec.attention_sinks,
        mla,
        bos_token_id: file.get_opt::<u32>("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: eos.into_iter().collect(),
        kv_cache_dtype: crate::dtype::DType::F32,
    };
    limits::check(&config).map_err(|m| bad(file, m))?;
    Ok(config)
}

/// A size from the metadata, within [`limits::MAX_DIM`].
fn bounded(file: &GgufFile, key: &str, value: Option<usize>) -> Result<Option<usize>> {
    match value {
        Some(v) if v > limits::MAX_DIM => {
            Err(bad(file, format!("{key} is {v}; no size may exceed {}", limits::MAX_DIM)))
        }
        v => Ok(v),
    }
}

/// Which layers slide: `sliding_window_pattern` as a period (every n-th
/// layer is global) or a per-layer list (true = sliding); without it, the
/// architecture's rule (Gemma 2 alternates, Gemma 3 has period 6).
fn layer_windows(
    file: &GgufFile,
    pattern_key: &str,
    arch: Architecture,
    num_layers: usize,
    window: Option<usize>,
) -> Result<Vec<Option<usize>>> {
    let Some(window) = window else { return Ok(vec![None; num_layers]) };
    let by_period =
        |n: usize| (0..num_layers).map(|l| if (l + 1) % n.max(1) != 0 { Some(window) } else { None }).collect();
    if let Some(flags) = file.get_opt::<&[bool]>(pattern_key).ok().flatten() {
        if flags.len() != num_layers {
            return Err(bad(file, format!("{pattern_key} has {} entries for {num_layers} layers", flags.len())));
        }
        return Ok(flags.iter().map(|&sliding| sliding.then_some(window)).collect());
    }
    if let Some(n) = file.get_opt::<usize>(pattern_key)? {
        return Ok(by_period(n));
    }
    Ok(match arch.spec().windows {
        WindowRule::Period(n) => by_period(n),
        WindowRule::None | WindowRule::Every | WindowRule::FromMaxWindowLayers => vec![Some(window); num_layers],
    })
}

/// The experts from `{arch}.expert_*` metadata: llama.cpp renormalizes the
/// top-k weights unless `expert_weights_norm` says otherwise, and a layer
/// has experts when it has a router (`ffn_gate_inp`). DeepSeek's router
/// (`expert_gating_func` 2: sigmoid) adds groups, a choice bias
/// (`exp_probs_b`), a scale and shared experts.
fn moe(file: &GgufFile, prefix: &str, num_layers: usize, routing: Routing, biases: bool) -> Result<MoeConfig> {
    let key = |k: &str| format!("{prefix}.{k}");
    let size = |k: &str| -> Result<usize> {
        bounded(file, &key(k), Some(file.get::<usize>(&key(k))?)).map(|v| v.unwrap_or(0))
    };
    let experts = size("expert_count")?;
    let top_k = size("expert_used_count")?;
    if top_k == 0 || top_k > experts {
        return Err(bad(file, format!("expert_used_count {top_k} is not in 1..={experts}")));
    }
    let expert_intermediate = match file.get_opt::<usize>(&key("expert_feed_forward_length"))? {
        Some(_) => size("expert_feed_forward_length")?,
        None => size("feed_forward_length")?,
    };
    let scale = file.get_opt::<f64>(&key("expert_weights_scale"))?.filter(|&s| s != 0.0).unwrap_or(1.0);
    let deepseek = routing == Routing::SigmoidGrouped;
    if scale != 1.0 && !deepseek {
        return Err(bad(file, format!("expert_weights_scale {scale} is not supported for this architecture")));
    }
    // llama.cpp's deepseek2 renormalizes only when told to
    let renormalize = file.get_opt::<bool>(&key("expert_weights_norm"))?.unwrap_or(!deepseek);
    let layers: Vec<bool> =
        (0..num_layers).map(|l| file.tensor(&format!("blk.{l}.ffn_gate_inp.weight")).is_some()).collect();
    if file.tensor("blk.0.ffn_gate.0.weight").is_some() {
        return Err(bad(
            file,
            "experts stored one tensor each (an old Mixtral GGUF); re-convert with a current llama.cpp".into(),
        ));
    }
    if !deepseek {
        return Ok(MoeConfig {
            experts,
            expert_intermediate,
            route: MoeConfig::softmax_route(top_k, renormalize),
            layers,
            biases,
            choice_bias: false,
            shared_intermediate: None,
        });
    }
    let scoring = match file.get_opt::<u32>(&key("expert_gating_func"))? {
        None | Some(1) => RouterScoring::Softmax,
        Some(2) => RouterScoring::Sigmoid,
        Some(other) => return Err(bad(file, format!("expert_gating_func {other} is not supported"))),
    };
    let groups = match file.get_opt::<usize>(&key("expert_group_count"))? {
        Some(g) if g > 1 => {
            let top_groups = size("expert_group_used_count")?;
            Some(ExpertGroups { groups: size("expert_group_count")?, top_groups })
        }
        _ => None,
    };
    let route = MoeRoute { top_k, scoring, renormalize, groups, scale: scale as f32 };
    route
        .output_spec(&[crate::ops::TensorSpec::new(&[1, experts], crate::dtype::DType::F32)])
        .map_err(|e| bad(file, e.to_string()))?;
    let shared = match file.get_opt::<usize>(&key("expert_shared_count"))? {
        Some(n) if n > 0 => Some(n * expert_intermediate),
        _ => None,
    };
    let first_moe = layers.iter().position(|&l| l).unwrap_or(0);
    Ok(MoeConfig {
        experts,
        expert_intermediate,
        route,
        layers,
        biases: false,
        choice_bias: file.tensor(&format!("blk.{first_moe}.exp_probs_b.bias")).is_some(),
        shared_intermediate: shared,
    })
}

/// DeepSeek's latent attention sizes, as llama.cpp writes them: the latent
/// (`kv_lora_rank`), the query's low rank, the rotary key
/// (`rope.dimension_count`) and each head's key and value widths
/// (`key_length_mla`, `value_length_mla`; older files have them as
/// `key_length` and `value_length`, with `kv_b` unsplit); and DeepSeek-V3.2's
/// lightning indexer (`attention.indexer.{head_count,key_length,top_k}`).
fn mla(file: &GgufFile, prefix: &str, indexer: bool) -> Result<MlaConfig> {
    let key = |k: &str| format!("{prefix}.{k}");
    let get = |k: &str| -> Result<Option<usize>> { bounded(file, &key(k), file.get_opt::<usize>(&key(k))?) };
    let need = |k: &str| -> Result<usize> { get(k)?.ok_or_else(|| bad(file, format!("no {}", key(k)))) };
    let rope = need("rope.dimension_count")?;
    let (qk, v) = match get("attention.key_length_mla")? {
        Some(qk) => (qk, need("attention.value_length_mla")?),
        None => (need("attention.key_length")?, need("attention.value_length")?),
    };
    let mut m = MlaConfig {
        q_lora_rank: get("attention.q_lora_rank")?.filter(|&r| r > 0),
        kv_lora_rank: need("attention.kv_lora_rank")?,
        nope: qk.saturating_sub(rope),
        rope,
        v,
        indexer: None,
    };
    if m.kv_lora_rank == 0 || m.nope == 0 || m.rope == 0 || !m.rope.is_multiple_of(2) || m.v == 0 {
        return Err(bad(file, format!("latent attention sizes must be positive (rope even): {m:?}")));
    }
    if indexer {
        let i = IndexerConfig {
            heads: need("attention.indexer.head_count")?,
            head_dim: need("attention.indexer.key_length")?,
            top_k: need("attention.indexer.top_k")?,
        };
        i.check(&m).map_err(|e| bad(file, e))?;
        m.indexer = Some(i);
    }
    Ok(m)
}

/// Hugging Face name -> where it comes from, for every tensor the decoder reads.
pub fn tensor_map(file: &GgufFile, config: &ModelConfig) -> Result<BTreeMap<String, GgufTensorRef>> {
    let arch = config.architecture;
    // llama.cpp's converter permutes the "llama" files' q and k (Mistral and Mixtral too)
    let permute = arch.spec().gguf == "llama";
    let mut map = BTreeMap::new();
    for info in file.tensors() {
        let name = info.name.as_str();
        let (hf, transform) = if let Some(rest) = name.strip_prefix("blk.") {
            let Some((layer, suffix)) = rest.split_once('.') else { continue };
            let p = format!("model.layers.{layer}");
            let (hf, transform) = match (suffix, config.sandwich_norms) {
                ("attn_norm.weight", _) => ("input_layernorm.weight", Transform::None),
                ("ffn_norm.weight", false) => ("post_attention_layernorm.weight", Transform::None),
                // gpt-oss names the same norm for where it sits
                ("post_attention_norm.weight", false) => ("post_attention_layernorm.weight", Transform::None),
                ("attn_sinks.weight", _) => ("self_attn.sinks", Transform::None),
                ("ffn_gate_inp.bias", _) => ("mlp.gate.bias", Transform::None),
                ("ffn_gate_exps.bias", _) => ("mlp.experts.gate_proj.bias", Transform::None),
                ("ffn_up_exps.bias", _) => ("mlp.experts.up_proj.bias", Transform::None),
                ("ffn_down_exps.bias", _) => ("mlp.experts.down_proj.bias", Transform::None),
                ("post_attention_norm.weight", true) => ("post_attention_layernorm.weight", Transform::None),
                ("ffn_norm.weight", true) => ("pre_feedforward_layernorm.weight", Transform::None),
                ("post_ffw_norm.weight", true) => ("post_feedforward_layernorm.weight", Transform::None),
                ("attn_q.weight", _) if permute => {
                    ("self_attn.q_proj.weight", Transform::UnpermuteRows { heads: config.num_heads })
                }
                ("attn_k.weight", _) if permute => {
                    ("self_attn.k_proj.weight", Transform::UnpermuteRows { heads: config.num_kv_heads })
                }
                ("attn_q.weight", _) => ("self_attn.q_proj.weight", Transform::None),
                ("attn_k.weight", _) => ("self_attn.k_proj.weight", Transform::None),
                ("attn_v.weight", _) => ("self_attn.v_proj.weight", Transform::None),
                ("attn_output.weight", _) => ("self_attn.o_proj.weight", Transform::None),
                ("attn_q.bias", _) if permute => {
                    ("self_attn.q_proj.bias", Transform::UnpermuteRows { heads: config.num_heads })
                }
                ("attn_k.bias", _) if permute => {
                    ("self_attn.k_proj.bias", Transform::UnpermuteRows { heads: config.num_kv_heads })
                }
                ("attn_q.bias", _) => ("self_attn.q_proj.bias", Transform::None),
                ("attn_k.bias", _) => ("self_attn.k_proj.bias", Transform::None),
                ("attn_v.bias", _) => ("self_attn.v_proj.bias", Transform::None),
                ("attn_output.bias", _) => ("self_attn.o_proj.bias", Transform::None),
                ("attn_q_norm.weight", _) => ("self_attn.q_norm.weight", Transform::None),
                ("attn_k_norm.weight", _) => ("self_attn.k_norm.weight", Transform::None),
                ("ffn_gate.weight", _) => ("mlp.gate_proj.weight", Transform::None),
                ("ffn_up.weight", _) => ("mlp.up_proj.weight", Transform::None),
                ("ffn_down.weight", _) => ("mlp.down_proj.weight", Transform::None),
                ("ffn_gate_inp.weight", _) => ("mlp.gate.weight", Transform::None),
                ("exp_probs_b.bias", _) => ("mlp.gate.e_score_correction_bias", Transform::None),
                ("ffn_gate_shexp.weight", _) => ("mlp.shared_experts.gate_proj.weight", Transform::None),
                ("ffn_up_shexp.weight", _) => ("mlp.shared_experts.up_proj.weight", Transform::None),
                ("ffn_down_shexp.weight", _) => ("mlp.shared_experts.down_proj.weight", Transform::None),
                // DeepSeek's latent attention; kv_b as one matrix (older files)
                // or as llama.cpp splits it, k_b per head already transposed
                ("attn_q_a.weight", _) => ("self_attn.q_a_proj.weight", Transform::None),
                ("attn_q_a_norm.weight", _) => ("self_attn.q_a_layernorm.weight", Transform::None),
                ("attn_q_b.weight", _) => ("self_attn.q_b_proj.weight", Transform::None),
                ("attn_kv_a_mqa.weight", _) => ("self_attn.kv_a_proj_with_mqa.weight", Transform::None),
                ("attn_kv_a_norm.weight", _) => ("self_attn.kv_a_layernorm.weight", Transform::None),
                ("attn_kv_b.weight", _) => ("self_attn.kv_b_proj.weight", Transform::None),
                ("attn_k_b.weight", _) => ("self_attn.k_b_proj.weight", Transform::None),
                ("attn_v_b.weight", _) => ("self_attn.v_b_proj.weight", Transform::None),
                // DeepSeek-V3.2's lightning indexer, as llama.cpp's deepseek32 writes it (no
                // reordering; the Hadamard rotation it applies to q and k is orthonormal, so
                // it leaves every score as it is and is not stored)
                ("indexer.attn_q_b.weight", _) => ("self_attn.indexer.wq_b.weight", Transform::None),
                ("indexer.attn_k.weight", _) => ("self_attn.indexer.wk.weight", Transform::None),
                ("indexer.k_norm.weight", _) => ("self_attn.indexer.k_norm.weight", Transform::None),
                ("indexer.k_norm.bias", _) => ("self_attn.indexer.k_norm.bias", Transform::None),
                ("indexer.proj.weight", _) => ("self_attn.indexer.weights_proj.weight", Transform::None),
                ("ffn_gate_exps.weight", _) => ("mlp.experts.gate_proj.weight", Transform::None),
                ("ffn_up_exps.weight", _) => ("mlp.experts.up_proj.weight", Transform::None),
                ("ffn_down_exps.weight", _) => ("mlp.experts.down_proj.weight", Transform::None),
                _ => continue, // not read by the decoder
            };
            (format!("{p}.{hf}"), transform)
        } else {
            match name {
                "token_embd.weight" => ("model.embed_tokens.weight".to_string(), Transform::None),
                "output_norm.weight" => ("model.norm.weight".to_string(), Transform::None),
                "output.weight" => ("lm_head.weight".to_string(), Transform::None),
                _ => continue,
            }
        };
        let transform =
            if config.norm_unit_offset && hf.ends_with("norm.weight") { Transform::MinusOne } else { transform };
        // [E, rows, cols] experts read as one [E * rows, cols] matrix, and
        // their biases [E, rows] as one vector
        let shape = match &info.shape[..] {
            [e, rows, cols] => vec![e * rows, *cols],
            [e, rows] if name.ends_with("_exps.bias") => vec![e * rows],
            other => other.to_vec(),
        };
        map.insert(hf, GgufTensorRef { gguf_name: name.to_string(), transform, shape });
    }
    Ok(map)
}

/// Applies a transform to a dequantized tensor of `shape` (rows, cols).
pub fn apply(transform: Transform, shape: &[usize], values: Vec<f32>) -> Result<Vec<f32>> {
    match transform {
        Transform::None => Ok(values),
        Transform::MinusOne => Ok(values.into_iter().map(|v| v - 1.0).collect()),
        Transform::UnpermuteRows { heads } => {
            let rows = shape[0];
            let row_bytes = values.len() / rows.max(1) * 4;
            Ok(bytemuck::pod_collect_to_vec(&unpermute_rows(bytemuck::cast_slice(&values), rows, row_bytes, heads)?))
        }
    }
}

/// Undoes llama.cpp's `permute(w, heads)` on `rows` stored rows of
/// `row_bytes` bytes each, whatever they hold (floats or whole blocks).
pub fn unpermute_rows(bytes: &[u8], rows: usize, row_bytes: usize, heads: usize) -> Result<Vec<u8>> {
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) || bytes.len() != rows * row_bytes
    {
        return Err(Error::Weight {
            name: "q/k projection".into(),
            msg: format!("{rows} rows do not split into {heads} heads of even size"),
        });
    }
    let d = rows / heads;
    let mut out = vec![0u8; bytes.len()];
    // stored row h*d + 2i + j holds Hugging Face row h*d + j*d/2 + i
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let (from, to) = (h * d + 2 * i + j, h * d + j * (d / 2) + i);
                out[to * row_bytes..(to + 1) * row_bytes]
                    .copy_from_slice(&bytes[from * row_bytes..(from + 1) * row_bytes]);
            }
        }
    }
    Ok(out)
}

/// The `tokenizer.ggml.*` vocabulary.
pub fn vocab(file: &GgufFile) -> Result<GgufVocab> {
    Ok(GgufVocab {
        model: file.get_opt::<&str>("tokenizer.ggml.model")?.unwrap_or("").to_string(),
        pre: file.get_opt::<&str>("tokenizer.ggml.pre")?.map(str::to_string),
        tokens: file.get_opt::<&[String]>("tokenizer.ggml.tokens")?.unwrap_or_default().to_vec(),
        token_types: file.get_opt::<&[i32]>("tokenizer.ggml.token_type")?.unwrap_or_default().to_vec(),
        scores: file.get_opt::<&[f32]>("tokenizer.ggml.scores")?.unwrap_or_default().to_vec(),
        merges: file.get_opt::<&[String]>("tokenizer.ggml.merges")?.unwrap_or_default().to_vec(),
        bos_token_id: file.get_opt::<u32>("tokenizer.ggml.bos_token_id")?,
        eos_token_id: file.get_opt::<u32>("tokenizer.ggml.eos_token_id")?,
        add_bos_token: file.get_opt::<bool>("tokenizer.ggml.add_bos_token")?,
        add_space_prefix: file.get_opt::<bool>("tokenizer.ggml.add_space_prefix")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's `permute`: reshape(heads, 2, d/2, cols).swapaxes(1, 2)
    fn permute(w: &[f32], heads: usize, rows: usize, cols: usize) -> Vec<f32> {
        let d = rows / heads;
        let mut out = vec![0.0; w.len()];
        for h in 0..heads {
            for half in 0..2 {
                for i in 0..d / 2 {
                    let src = h * d + half * (d / 2) + i; // (h, half, i)
                    let dst = h * d + i * 2 + half; // (h, i, half)
                    out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_undoes_llama_cpp_permute() {
        let (heads, rows, cols) = (3, 24, 5);
        let w: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let stored = permute(&w, heads, rows, cols);
        assert_ne!(stored, w);
        assert_eq!(apply(Transform::UnpermuteRows { heads }, &[rows, cols], stored).unwrap(), w);
    }

    #[test]
    fn gemma_norms_lose_their_unit_offset() {
        assert_eq!(apply(Transform::MinusOne, &[2], vec![1.5, 0.25]).unwrap(), [0.5, -0.75]);
    }
}
