//! A layer's experts under one name, whatever form the checkpoint stores
//! them in. The decoder reads `model.layers.N.mlp.experts.{gate,up,down}_proj.weight`
//! as one matrix [experts * rows, cols] (what `moe_matmul` takes) and the
//! router as `model.layers.N.mlp.gate.weight`. Checkpoints hold them as
//! * one matrix per expert: `mlp.experts.E.gate_proj.weight` (Qwen3-MoE) or
//!   `block_sparse_moe.experts.E.w1.weight` (Mixtral: w1 gate, w3 up, w2 down,
//!   router `block_sparse_moe.gate.weight`);
//! * transformers-5's fused tensors: `mlp.experts.gate_up_proj` [E, 2I, H]
//!   (each expert's gate rows, then its up rows) and `mlp.experts.down_proj` [E, H, I];
//! * gpt-oss's (told apart by their biases, `gate_up_proj_bias` [E, 2I]):
//!   `gate_up_proj` [E, H, 2I] multiplied as `x @ W`, gate and up columns
//!   interleaved (gate even, up odd), `down_proj` [E, I, H], `down_proj_bias`
//!   [E, H], and the router `mlp.router.{weight,bias}`. These are transposed
//!   into [E * out, in] when read.
//!
//! GGUF's `ffn_*_exps` [E, rows, cols] need none of this (`gguf_model`).

use std::collections::BTreeMap;
use std::ops::Range;

use super::{StDtype, TensorEntry};

/// A tensor made from stored ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub source: Source,
    pub shape: Vec<usize>,
    pub dtype: StDtype,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Rows of stored tensors (flattened to [rows, last dim]), in order.
    Rows(Vec<(String, Range<usize>)>),
    /// A stored [E, in, cols] read as [E * out, in]: each expert's columns
    /// `first, first + step, ...` (`out` of them), transposed.
    Columns { name: String, first: usize, step: usize },
    /// Rows `first, first + step, ...` of a stored tensor seen as `rows`
    /// rows of equal size (gpt-oss's interleaved gate and up MXFP4 blocks).
    Strided { name: String, rows: usize, first: usize, step: usize },
}

impl View {
    /// The stored tensors it reads.
    pub fn parts(&self) -> Vec<&str> {
        match &self.source {
            Source::Rows(parts) => parts.iter().map(|(p, _)| p.as_str()).collect(),
            Source::Columns { name, .. } | Source::Strided { name, .. } => vec![name.as_str()],
        }
    }
}

/// The values of a [`Source::Columns`] view of `bytes`, a stored [E, in, cols]
/// tensor of `elem`-byte elements.
pub fn gather_columns(bytes: &[u8], shape: &[usize], elem: usize, first: usize, step: usize) -> Vec<u8> {
    let [e, inp, cols] = shape[..] else { return Vec::new() };
    let out = (cols - first).div_ceil(step);
    let mut v = Vec::with_capacity(e * out * inp * elem);
    for x in 0..e {
        for o in 0..out {
            let c = first + o * step;
            for i in 0..inp {
                let at = ((x * inp + i) * cols + c) * elem;
                v.extend_from_slice(&bytes[at..at + elem]);
            }
        }
    }
    v
}

/// What goes wrong while gathering a layer's experts, by the name the
/// decoder asks for.
pub type Broken = BTreeMap<String, String>;

/// Every expert view the stored tensors (name -> entry) make, and why the
/// ones that cannot be made fail.
pub fn views<'a>(tensors: impl Iterator<Item = (&'a str, &'a TensorEntry)>) -> (BTreeMap<String, View>, Broken) {
    #![allow(clippy::type_complexity)]
    let tensors: Vec<(&str, &TensorEntry)> = tensors.collect();
    let mut views = BTreeMap::new();
    let mut broken = Broken::new();
    let oai = |layer: &str| tensors.iter().any(|(n, _)| *n == format!("{layer}.mlp.experts.gate_up_proj_bias"));
    // canonical name -> expert index -> (stored name, entry)
    let mut per_expert: BTreeMap<String, BTreeMap<usize, (&str, &TensorEntry)>> = BTreeMap::new();
    for &(name, entry) in &tensors {
        if let Some((layer, rest)) = split_moe(name) {
            if oai(&layer) {
                openai_experts(&layer, rest, name, entry, &mut views, &mut broken);
            } else if rest == "gate.weight" && name.contains(".block_sparse_moe.") {
                views.insert(format!("{layer}.mlp.gate.weight"), whole(name, entry));
            } else if let Some((e, proj, part)) = expert_matrix(rest) {
                per_expert.entry(format!("{layer}.mlp.experts.{proj}.{part}")).or_default().insert(e, (name, entry));
            } else if rest == "experts.gate_up_proj" {
                fused_gate_up(&layer, name, entry, &mut views, &mut broken);
            } else if rest == "experts.down_proj" {
                match &entry.shape[..] {
                    &[e, rows, cols] => {
                        let view = View { shape: vec![e * rows, cols], ..whole(name, entry) };
                        views.insert(format!("{layer}.mlp.experts.down_proj.weight"), view);
                    }
                    other => {
                        broken.insert(
                            format!("{layer}.mlp.experts.down_proj.weight"),
                            format!("{name} has shape {other:?}, expected [experts, hidden, intermediate]"),
                        );
                    }
                }
            }
        }
    }
    for (canonical, experts) in per_expert {
        match stack(&experts) {
            Ok(view) => {
                views.insert(canonical, view);
            }
            Err(msg) => {
                broken.insert(canonical, msg);
            }
        }
    }
    (views, broken)
}

/// `model.layers.N.mlp.REST` or `model.layers.N.block_sparse_moe.REST` -> ("model.layers.N", REST)
fn split_moe(name: &str) -> Option<(String, &str)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let rest = rest.strip_prefix("mlp.").or_else(|| rest.strip_prefix("block_sparse_moe."))?;
    Some((format!("model.layers.{layer}"), rest))
}

/// `experts.E.gate_proj.weight` / `experts.E.w1.weight` -> (E, "gate_proj", "weight").
/// A quantized expert's scales stack the same way: FP8's `weight_scale_inv`
/// blocks (DeepSeek's 128x128 blocks line up when the experts' rows are whole
/// blocks), NVFP4's block scales (`weight_scale`), and the per-tensor scales
/// (FP8's `weight_scale`, NVFP4's `weight_scale_2` or `weight_global_scale`)
/// into one vector [experts].
fn expert_matrix(rest: &str) -> Option<(usize, &'static str, &'static str)> {
    let rest = rest.strip_prefix("experts.")?;
    let (e, rest) = rest.split_once('.')?;
    let (proj, part) = rest.split_once('.')?;
    let proj = match proj {
        "gate_proj" | "w1" => "gate_proj",
        "up_proj" | "w3" => "up_proj",
        "down_proj" | "w2" => "down_proj",
        _ => return None,
    };
    let part = match part {
        "weight" => "weight",
        "weight_packed" => "weight_packed",
        "weight_scale" => "weight_scale",
        "weight_scale_inv" => "weight_scale_inv",
        "weight_scale_2" => "weight_scale_2",
        "weight_global_scale" => "weight_global_scale",
        _ => return None,
    };
    Some((e.parse().ok()?, proj, part))
}

/// A stored tensor under another name, whole.
fn whole(name: &str, entry: &TensorEntry) -> View {
    let rows = entry.shape[..entry.shape.len().saturating_sub(1)].iter().product();
    View { source: Source::Rows(vec![(name.to_string(), 0..rows)]), shape: entry.shape.clone(), dtype: entry.dtype }
}

/// Experts 0..E, each [rows, cols] of one dtype, stacked into [E * rows,
/// cols]; or each a scalar ([] or [1]), into [E].
fn stack(experts: &BTreeMap<usize, (&str, &TensorEntry)>) -> Result<View, String> {
    let (first_name, first) = experts.values().next().expect("at least one expert");
    let (rows, shape) = match first.shape[..] {
        [rows, cols] => (rows, vec![experts.len() * rows, cols]),
        [] | [1] => (1, vec![experts.len()]),
        _ => return Err(format!("{first_name} has shape {:?}, expected a matrix or a scalar", first.shape)),
    };
    let mut parts = Vec::with_capacity(experts.len());
    for (i, (&e, &(name, entry))) in experts.iter().enumerate() {
        if e != i {
            return Err(format!("expert {i} is missing (next is {name})"));
        }
        if entry.shape != first.shape || entry.dtype != first.dtype {
            return Err(format!(
                "{name} is {} {:?}, but {first_name} is {} {:?}",
                entry.dtype.name(),
                entry.shape,
                first.dtype.name(),
                first.shape
            ));
        }
        parts.push((name.to_string(), 0..rows));
    }
    Ok(View { shape, source: Source::Rows(parts), dtype: first.dtype })
}

/// [E, 2I, H] -> gate [E * I, H] (rows e*2I .. e*2I + I) and up (the next I rows).
fn fused_gate_up(
    layer: &str,
    name: &str,
    entry: &TensorEntry,
    views: &mut BTreeMap<String, View>,
    broken: &mut Broken,
) {
    let &[e, two_i, cols] = &entry.shape[..] else {
        broken.insert(
            format!("{layer}.mlp.experts.gate_proj.weight"),
            format!("{name} has shape {:?}, expected [experts, 2 * intermediate, hidden]", entry.shape),
        );
        return;
    };
    if two_i % 2 != 0 {
        broken.insert(
            format!("{layer}.mlp.experts.gate_proj.weight"),
            format!("{name} has an odd {two_i} rows per expert"),
        );
        return;
    }
    let i = two_i / 2;
    for (proj, offset) in [("gate_proj", 0), ("up_proj", i)] {
        let parts = (0..e).map(|x| (name.to_string(), x * two_i + offset..x * two_i + offset + i)).collect();
        views.insert(
            format!("{layer}.mlp.experts.{proj}.weight"),
            View { source: Source::Rows(parts), shape: vec![e * i, cols], dtype: entry.dtype },
        );
    }
}

/// gpt-oss's experts and router (see the module doc).
fn openai_experts(
    layer: &str,
    rest: &str,
    name: &str,
    entry: &TensorEntry,
    views: &mut BTreeMap<String, View>,
    broken: &mut Broken,
) {
    let experts = format!("{layer}.mlp.experts");
    let columns = |first, step| Source::Columns { name: name.to_string(), first, step };
    let mut put = |key: String, source: Source, shape: Vec<usize>| {
        views.insert(key, View { source, shape, dtype: entry.dtype });
    };
    match (rest, &entry.shape[..]) {
        ("router.weight" | "router.bias", _) => {
            let key = format!("{layer}.mlp.gate.{}", rest.trim_start_matches("router."));
            views.insert(key, whole(name, entry));
        }
        ("experts.gate_up_proj", &[e, inp, two_i]) if two_i % 2 == 0 => {
            put(format!("{experts}.gate_proj.weight"), columns(0, 2), vec![e * two_i / 2, inp]);
            put(format!("{experts}.up_proj.weight"), columns(1, 2), vec![e * two_i / 2, inp]);
        }
        ("experts.down_proj", &[e, inp, out]) => {
            put(format!("{experts}.down_proj.weight"), columns(0, 1), vec![e * out, inp])
        }
        // biases [E, n] are [E, 1, n] matrices
        ("experts.gate_up_proj_bias", &[e, two_i]) if two_i % 2 == 0 => {
            let gate = Source::Columns { name: name.to_string(), first: 0, step: 2 };
            let up = Source::Columns { name: name.to_string(), first: 1, step: 2 };
            put(format!("{experts}.gate_proj.bias"), gate, vec![e * two_i / 2]);
            put(format!("{experts}.up_proj.bias"), up, vec![e * two_i / 2]);
        }
        // MXFP4 as published: blocks [E, N, K/32, 16] and scales [E, N, K/32] of (out, in) matrices
        ("experts.gate_up_proj_blocks" | "experts.gate_up_proj_scales", &[e, two_i, g, ..]) if two_i % 2 == 0 => {
            let part = if rest.ends_with("blocks") { "blocks" } else { "scales" };
            let width = entry.shape[2..].iter().product::<usize>();
            for (proj, first) in [("gate_proj", 0), ("up_proj", 1)] {
                let source = Source::Strided { name: name.to_string(), rows: e * two_i, first, step: 2 };
                put(format!("{experts}.{proj}.{part}"), source, vec![e * two_i / 2, width]);
            }
            let _ = g;
        }
        ("experts.down_proj_blocks" | "experts.down_proj_scales", &[e, n, ..]) => {
            let part = if rest.ends_with("blocks") { "blocks" } else { "scales" };
            let width = entry.shape[2..].iter().product::<usize>();
            put(format!("{experts}.down_proj.{part}"), whole(name, entry).source, vec![e * n, width]);
        }
        ("experts.down_proj_bias", &[e, n]) => {
            put(format!("{experts}.down_proj.bias"), whole(name, entry).source, vec![e * n]);
        }
        (
            "experts.gate_up_proj" | "experts.down_proj" | "experts.gate_up_proj_bias" | "experts.down_proj_bias",
            shape,
        ) => {
            broken.insert(
                format!("{experts}.{}", rest.trim_start_matches("experts.")),
                format!("{name} has shape {shape:?}"),
            );
        }
        _ => {}
    }
}

/// Rows `first, first + step, ...` of `bytes` split into `rows` equal rows.
pub fn gather_rows(bytes: &[u8], rows: usize, first: usize, step: usize) -> Vec<u8> {
    let row = bytes.len() / rows.max(1);
    (first..rows).step_by(step.max(1)).flat_map(|r| &bytes[r * row..(r + 1) * row]).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(shape: &[usize]) -> TensorEntry {
        TensorEntry { dtype: StDtype::F32, shape: shape.to_vec(), range: 0..shape.iter().product::<usize>() * 4 }
    }

    fn views_of(tensors: &[(&str, TensorEntry)]) -> (BTreeMap<String, View>, Broken) {
        views(tensors.iter().map(|(n, e)| (*n, e)))
    }

    #[test]
    fn per_expert_matrices_stack_in_expert_order() {
        let names: Vec<String> =
            [2, 0, 1].iter().map(|e| format!("model.layers.3.mlp.experts.{e}.up_proj.weight")).collect();
        let tensors: Vec<_> = names.iter().map(|n| (n.as_str(), entry(&[4, 8]))).collect();
        let (views, broken) = views_of(&tensors);
        assert!(broken.is_empty());
        let v = &views["model.layers.3.mlp.experts.up_proj.weight"];
        assert_eq!(v.shape, [12, 8]);
        assert_eq!(
            v.parts(),
            [
                "model.layers.3.mlp.experts.0.up_proj.weight",
                "model.layers.3.mlp.experts.1.up_proj.weight",
                "model.layers.3.mlp.experts.2.up_proj.weight"
            ]
        );
    }

    #[test]
    fn a_missing_or_misshapen_expert_says_which() {
        let (views, broken) = views_of(&[
            ("model.layers.0.mlp.experts.0.gate_proj.weight", entry(&[4, 8])),
            ("model.layers.0.mlp.experts.2.gate_proj.weight", entry(&[4, 8])),
            ("model.layers.0.block_sparse_moe.experts.0.w2.weight", entry(&[8, 4])),
            ("model.layers.0.block_sparse_moe.experts.1.w2.weight", entry(&[8, 5])),
        ]);
        assert!(views.is_empty());
        assert!(broken["model.layers.0.mlp.experts.gate_proj.weight"].contains("expert 1 is missing"));
        assert!(broken["model.layers.0.mlp.experts.down_proj.weight"].contains("[8, 5]"));
    }

    #[test]
    fn per_expert_scalars_stack_into_a_vector() {
        let tensors: Vec<(String, TensorEntry)> = (0..3)
            .flat_map(|e| {
                let p = format!("model.layers.0.mlp.experts.{e}.down_proj");
                [(format!("{p}.weight_scale_2"), entry(&[])), (format!("{p}.weight_scale"), entry(&[4, 2]))]
            })
            .collect();
        let (views, broken) = views(tensors.iter().map(|(n, e)| (n.as_str(), e)));
        assert!(broken.is_empty(), "{broken:?}");
        assert_eq!(views["model.layers.0.mlp.experts.down_proj.weight_scale_2"].shape, [3]);
        assert_eq!(views["model.layers.0.mlp.experts.down_proj.weight_scale"].shape, [12, 2]);
    }

    #[test]
    fn fused_experts_split_into_gate_and_up_halves() {
        let (views, _) = views_of(&[("model.layers.1.mlp.experts.gate_up_proj", entry(&[3, 10, 8]))]);
        let Source::Rows(up) = &views["model.layers.1.mlp.experts.up_proj.weight"].source else { panic!("rows") };
        let ranges: Vec<_> = up.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(ranges, [5..10, 15..20, 25..30]);
        assert_eq!(views["model.layers.1.mlp.experts.gate_proj.weight"].shape, [15, 8]);
    }

    #[test]
    fn gpt_oss_columns_interleave_and_transpose() {
        // one expert [in 2, cols 4] = [[0, 1, 2, 3], [4, 5, 6, 7]]: gate = columns 0, 2 transposed
        let bytes: Vec<u8> = (0..8).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let gate = gather_columns(&bytes, &[1, 2, 4], 4, 0, 2);
        let gate: Vec<f32> = gate.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(gate, [0.0, 4.0, 2.0, 6.0]);
        assert_eq!(gather_rows(&[0, 1, 2, 3, 4, 5], 3, 1, 2), [2, 3]);
    }
}
