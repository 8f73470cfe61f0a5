//! Linear weights stored already quantized, read as they are:
//!
//! - NVFP4, ModelOpt export: `p.weight` u8 [N, K/2], `p.weight_scale` F8_E4M3
//!   [N, K/16], `p.weight_scale_2` f32 scalar (`p.input_scale` is for
//!   activations and unused by weight-only matmuls);
//! - NVFP4, compressed-tensors `nvfp4-pack-quantized`: `p.weight_packed` u8
//!   [N, K/2], `p.weight_scale` F8_E4M3 [N, K/16], `p.weight_global_scale` f32 [1];
//! - FP8 E4M3: `p.weight` F8_E4M3 [N, K] with `p.weight_scale_inv` f32 blocks
//!   (DeepSeek-V3, Qwen FP8) or `p.weight_scale` f32 per tensor ([] or [1]) or
//!   per channel ([N] or [N, 1]);
//! - MXFP4, gpt-oss: `p.blocks` u8 [N, K/2] and `p.scales` u8 E8M0 [N, K/32]
//!   (its experts' `*_blocks` / `*_scales`, gathered by `loader/experts.rs`).
//!
//! A stack of experts stored one matrix each (`loader/experts.rs`) has one
//! per-tensor scale per expert, a vector [experts]. FP8's become a scale per
//! row (the same decoding). NVFP4's cannot: its tensor scale is one number,
//! so the stack is held at tensor scale 1 and each expert's products are
//! scaled instead ([`Stored::expert_scales`], `moe_matmul`'s scale).

use crate::error::{Error, Result};
use crate::loader::{StDtype, WeightStore};
use crate::quant::{Fp8Scaling, Fp8Weight, MxScaleRule, Mxfp4, Nvfp4, Nvfp4Convention, QuantFormat, QuantizedMatrix};

/// The stored format of linear `prefix`, if it is stored quantized.
pub fn stored_format(store: &WeightStore, prefix: &str) -> Result<Option<QuantFormat>> {
    let has = |s: &str| store.contains(&format!("{prefix}.{s}"));
    let dtype = |s: &str| store.dtype_of(&format!("{prefix}.{s}"));
    if has("blocks") && has("scales") {
        return Ok(Some(QuantFormat::Mxfp4(MxScaleRule::Ocp))); // the rule only matters when quantizing
    }
    if has("weight_packed") && has("weight_global_scale") {
        return Ok(Some(QuantFormat::Nvfp4(Nvfp4Convention::CompressedTensors)));
    }
    if !has("weight") {
        return Ok(None);
    }
    match dtype("weight")? {
        StDtype::U8 if has("weight_scale") || has("weight_scale_2") => {
            Ok(Some(QuantFormat::Nvfp4(Nvfp4Convention::ModelOpt)))
        }
        StDtype::F8E4M3 => Ok(Some(QuantFormat::Fp8(Fp8Scaling::PerTensor))), // scaling refined on load
        _ => Ok(None),
    }
}

/// `format` as [`stored_format`] found it, made exact for a [rows, cols]
/// matrix from the shapes of its scales (no data read): FP8's scaling is
/// per tensor, per channel, or in blocks as the scale tensor's shape says.
pub fn exact_format(
    store: &WeightStore,
    prefix: &str,
    format: QuantFormat,
    rows: usize,
    cols: usize,
) -> Result<QuantFormat> {
    Ok(match format {
        QuantFormat::Fp8(_) => QuantFormat::Fp8(fp8_scales(store, prefix, rows, cols)?.1),
        other => other,
    })
}

/// The name of an FP8 weight's scale tensor and the scaling its shape says.
fn fp8_scales(store: &WeightStore, prefix: &str, rows: usize, cols: usize) -> Result<(&'static str, Fp8Scaling)> {
    let name = |s: &str| format!("{prefix}.{s}");
    if store.contains(&name("weight_scale_inv")) {
        let shape = store.shape_of(&name("weight_scale_inv"))?;
        let block = |n: usize, s: usize| n.div_ceil(s.max(1)).next_power_of_two();
        let [sr, sc] = shape[..] else {
            return Err(Error::Weight { name: name("weight_scale_inv"), msg: format!("shape {shape:?}") });
        };
        return Ok(("weight_scale_inv", Fp8Scaling::Block { rows: block(rows, sr), cols: block(cols, sc) }));
    }
    let shape = store.shape_of(&name("weight_scale"))?;
    // one per row, or one per group of rows (an expert's, in a stack)
    let count = shape.iter().product::<usize>();
    let per_rows = count > 1 && rows.is_multiple_of(count);
    Ok(("weight_scale", if per_rows { Fp8Scaling::PerChannel } else { Fp8Scaling::PerTensor }))
}

/// A quantized matrix as read.
pub struct Stored {
    pub matrix: QuantizedMatrix,
    /// For a stack of NVFP4 experts whose tensor scales differ: what each
    /// expert's products are multiplied by (its `weight_scale_2`, or one over
    /// its `weight_global_scale`); the matrix then has tensor scale 1.
    pub expert_scales: Option<Vec<f32>>,
}

impl Stored {
    /// The matrix of a linear that is not a stack of experts (`name` its weight).
    pub fn single(self, name: &str) -> Result<QuantizedMatrix> {
        match self.expert_scales {
            Some(_) => Err(Error::Weight { name: name.into(), msg: "has a tensor scale per expert".into() }),
            None => Ok(self.matrix),
        }
    }
}

/// Reads linear `prefix` [rows, cols] stored in `format`.
pub fn load(store: &WeightStore, prefix: &str, format: QuantFormat, rows: usize, cols: usize) -> Result<Stored> {
    let name = |s: &str| format!("{prefix}.{s}");
    let bad = |what: &str, msg: String| Error::Weight { name: name(what), msg };
    let get = |s: &str, dtype: StDtype, shape: &[&[usize]]| -> Result<Vec<u8>> {
        let raw = store.get(&name(s)).map_err(|_| bad(s, "missing: the quantized checkpoint is incomplete".into()))?;
        if raw.dtype != dtype {
            return Err(bad(s, format!("stored as {}, expected {}", raw.dtype.name(), dtype.name())));
        }
        if !shape.contains(&raw.shape) {
            return Err(bad(s, format!("shape {:?}, expected {:?}", raw.shape, shape[0])));
        }
        Ok(raw.bytes.into_owned())
    };
    let f32s =
        |b: &[u8]| -> Vec<f32> { b.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect() };
    let mut expert_scales = None;
    let matrix = match format {
        QuantFormat::Nvfp4(convention) => {
            let (packed_name, global) = match convention {
                Nvfp4Convention::ModelOpt => ("weight", "weight_scale_2"),
                Nvfp4Convention::CompressedTensors => ("weight_packed", "weight_global_scale"),
            };
            let packed = get(packed_name, StDtype::U8, &[&[rows, cols / 2]])?;
            let scales = get("weight_scale", StDtype::F8E4M3, &[&[rows, cols / 16]])?;
            // one value ([] or [1]), or a vector [experts] for a stack (see the module doc)
            let n = store.shape_of(&name(global)).ok().and_then(|s| s.first().copied()).unwrap_or(1);
            let tensor = f32s(&get(global, StDtype::F32, &[&[], &[n]])?);
            let tensor_scale = match tensor[..] {
                [] => return Err(bad(global, "is empty".into())),
                [s, ..] if tensor.iter().all(|&t| t == s) => s,
                _ if rows.is_multiple_of(tensor.len()) => {
                    let ct = convention == Nvfp4Convention::CompressedTensors;
                    if let Some(s) = tensor.iter().find(|&&s| !(s.is_finite() && (s > 0.0 || (!ct && s == 0.0)))) {
                        return Err(bad(global, format!("holds {s}, not a tensor scale")));
                    }
                    expert_scales = Some(tensor.iter().map(|&s| if ct { 1.0 / s } else { s }).collect());
                    1.0
                }
                _ => return Err(bad(global, format!("{} values do not split {rows} rows", tensor.len()))),
            };
            QuantizedMatrix::Nvfp4(Nvfp4::from_parts(convention, rows, cols, packed, scales, tensor_scale)?)
        }
        QuantFormat::Fp8(_) => {
            let data = get("weight", StDtype::F8E4M3, &[&[rows, cols]])?;
            let (scale_name, scaling) = fp8_scales(store, prefix, rows, cols)?;
            let want = scaling.scale_shape(rows, cols);
            let raw = store.get(&name(scale_name))?;
            let count = raw.shape.iter().product::<usize>();
            let per_row_group = scaling == Fp8Scaling::PerChannel && count < rows; // a scale per expert
            if raw.dtype != StDtype::F32 || (count != want[0] * want[1] && !per_row_group) {
                return Err(bad(scale_name, format!("{} {:?} does not fit {scaling:?}", raw.dtype.name(), raw.shape)));
            }
            let mut scales = f32s(&raw.bytes);
            if per_row_group {
                scales = scales.iter().flat_map(|&s| std::iter::repeat_n(s, rows / count)).collect();
            }
            QuantizedMatrix::Fp8(Fp8Weight::from_parts(scaling, rows, cols, data, scales)?)
        }
        QuantFormat::Mxfp4(_) => {
            let packed = get("blocks", StDtype::U8, &[&[rows, cols / 2]])?;
            let scales = get("scales", StDtype::U8, &[&[rows, cols / 32]])?;
            QuantizedMatrix::Mxfp4(Mxfp4::from_parts(rows, cols, packed, scales)?)
        }
        other => return Err(bad("weight", format!("loading stored {other} weights is not supported yet"))),
    };
    Ok(Stored { matrix, expert_scales })
}
