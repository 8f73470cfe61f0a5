//! Bounds on what a config may say, far above any published model, so that
//! every size derived from one (parameters, bytes, KV per token) is computed
//! without overflow, and an absurd file is refused with a clear error before
//! anything is allocated for it.

use super::ModelConfig;

/// Any one size or count in a config (published: up to ~10^6, a context).
pub const MAX_DIM: usize = u32::MAX as usize;
/// Decoder layers (published: up to ~130); per-layer tables are this long.
pub const MAX_LAYERS: usize = 1024;
/// Routed experts (published: up to 384).
pub const MAX_EXPERTS: usize = 1 << 16;
/// Parameters, 2^48 (~2.8e14): over 100x the largest published model, and
/// small enough that their bytes in any format fit a u64 many times over.
pub const MAX_PARAMETERS: u128 = 1 << 48;
/// KV-cache values per token, over all layers (DeepSeek-V3: 35,136; a
/// 405B Llama: 516,096).
pub const MAX_KV_FLOATS_PER_TOKEN: u128 = 1 << 32;

/// Why `config` is empty or beyond the bounds, if it is: both config
/// readers (config.json and GGUF metadata) end with this.
pub(crate) fn check(config: &ModelConfig) -> Result<(), String> {
    for (what, v) in [
        ("the hidden size", config.hidden_size),
        ("the intermediate size", config.intermediate_size),
        ("the layer count", config.num_layers),
        ("the vocabulary size", config.vocab_size),
        ("the head dimension", config.head_dim),
    ] {
        if v == 0 {
            return Err(format!("{what} must be positive"));
        }
    }
    if config.num_layers > MAX_LAYERS {
        return Err(format!("{} layers; at most {MAX_LAYERS}", config.num_layers));
    }
    if let Some(m) = &config.moe
        && m.experts > MAX_EXPERTS
    {
        return Err(format!("{} experts; at most {MAX_EXPERTS}", m.experts));
    }
    let (total, _) = config.parameter_counts_wide();
    if total > MAX_PARAMETERS {
        let (total, most) = (total as f64, MAX_PARAMETERS as f64);
        return Err(format!("the sizes imply {total:.3e} parameters; at most {most:.3e}"));
    }
    let n = |v: usize| v as u128;
    let kv = n(config.num_layers) * n(config.num_kv_heads) * n(config.head_dim) * 2;
    let mha = match &config.mla {
        Some(m) => n(config.num_layers) * n(config.num_heads) * (n(m.nope) + n(m.rope) + n(m.v)),
        None => kv,
    };
    if kv.max(mha) > MAX_KV_FLOATS_PER_TOKEN {
        return Err(format!("{} KV-cache values per token; at most {MAX_KV_FLOATS_PER_TOKEN}", kv.max(mha)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse;

    /// A llama config with `fields` over the base sizes.
    fn llama(fields: &str) -> String {
        let base = r#""hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
            "num_hidden_layers": 2, "vocab_size": 100, "max_position_embeddings": 64"#;
        format!(r#"{{"architectures": ["LlamaForCausalLM"], {base}, {fields}}}"#)
    }

    /// Absurd sizes are clear errors from the reader, never an overflow
    /// (these tests run with overflow checks) or an allocation of their size.
    #[test]
    fn absurd_sizes_are_refused_with_what_is_wrong() {
        for (fields, says) in [
            (r#""hidden_size": 2147483648, "num_attention_heads": 1"#, "parameters"),
            (r#""num_hidden_layers": 1000000"#, "1000000 layers; at most 1024"),
            (r#""num_hidden_layers": 1000000000000"#, "no size in a config may exceed"),
            (r#""vocab_size": 1099511627776"#, "no size in a config may exceed"),
            (r#""vocab_size": 4294967295, "hidden_size": 4294967295, "num_attention_heads": 1"#, "parameters"),
            (r#""intermediate_size": 9223372036854775807"#, "no size in a config may exceed"),
            (r#""num_key_value_heads": 0"#, "multiple of num_key_value_heads"),
            (r#""head_dim": 0"#, "the head dimension must be positive"),
            (r#""head_dim": 4294967295, "num_attention_heads": 4096, "num_key_value_heads": 4096"#, "parameters"),
        ] {
            let err = parse(&llama(fields)).expect_err(fields).to_string();
            assert!(err.contains(says), "{fields}: {err}");
        }
    }

    /// The bounds sit far above the largest published models.
    #[test]
    fn published_giants_are_within_the_bounds() {
        let llama_405b = r#""hidden_size": 16384, "intermediate_size": 53248, "num_attention_heads": 128,
            "num_key_value_heads": 8, "num_hidden_layers": 126, "vocab_size": 128256, "max_position_embeddings": 131072"#;
        let c = parse(&format!(r#"{{"architectures": ["LlamaForCausalLM"], {llama_405b}}}"#)).unwrap();
        assert!((c.parameter_counts().total as f64 / 1e9 - 405.9).abs() < 0.5, "{:?}", c.parameter_counts());
    }
}
