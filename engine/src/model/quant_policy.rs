//! Which weights to quantize when a model loads (`--quant FORMAT
//! --quant-exclude PATTERN`). Only linear layers are candidates; the
//! embedding table is gathered, not multiplied, and `lm_head` and the MoE
//! routers (`mlp.gate`) are excluded by default, as ModelOpt does: a router's
//! rounding would change which experts a token runs.

use crate::quant::QuantFormat;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantPolicy {
    pub format: Option<QuantFormat>,
    /// Substring patterns (`*` matches anything) of weight names left as stored.
    pub exclude: Vec<String>,
}

/// `lm_head`, and the routers under every name a checkpoint gives them
/// (the loader's `mlp.gate`, Mixtral's `block_sparse_moe.gate`, gpt-oss's `mlp.router`).
pub const DEFAULT_EXCLUDE: [&str; 4] = ["lm_head", "mlp.gate.", "block_sparse_moe.gate.", "mlp.router."];

impl QuantPolicy {
    /// `format` with the default exclusions plus `extra`.
    pub fn new(format: Option<QuantFormat>, extra: &[String]) -> Self {
        let mut exclude: Vec<String> = DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect();
        exclude.extend(extra.iter().cloned());
        QuantPolicy { format, exclude }
    }

    /// The format the linear weight `name` is quantized to, if any.
    pub fn format_for(&self, name: &str) -> Option<QuantFormat> {
        let format = self.format?;
        (!self.exclude.iter().any(|p| matches(p, name))).then_some(format)
    }
}

/// `pattern` occurs in `name`, where `*` in the pattern matches any run.
fn matches(pattern: &str, name: &str) -> bool {
    let mut rest = name;
    let parts: Vec<&str> = pattern.split('*').collect();
    for (i, part) in parts.iter().enumerate() {
        match rest.find(part) {
            // a pattern without `*` may match anywhere; with `*`, pieces in order
            Some(at) if i == 0 || !part.is_empty() => rest = &rest[at + part.len()..],
            Some(_) => {}
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lm_head_routers_and_patterns_are_excluded() {
        let p = QuantPolicy::new(Some("int8".parse().unwrap()), &["layers.0.*down".into()]);
        assert!(p.format_for("lm_head.weight").is_none());
        assert!(p.format_for("model.layers.3.mlp.gate.weight").is_none());
        assert!(p.format_for("model.layers.3.block_sparse_moe.gate.weight").is_none());
        assert!(p.format_for("model.layers.3.mlp.router.weight").is_none());
        assert!(p.format_for("model.layers.3.mlp.gate_proj.weight").is_some());
        assert!(p.format_for("model.layers.0.mlp.down_proj.weight").is_none());
        assert!(p.format_for("model.layers.1.mlp.down_proj.weight").is_some());
        assert!(p.format_for("model.layers.0.mlp.up_proj.weight").is_some());
        assert!(QuantPolicy::default().format_for("model.layers.0.mlp.up_proj.weight").is_none());
    }
}
