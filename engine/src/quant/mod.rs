//! Weight quantization formats: reference quantizers (f32 [N, K] row-major
//! -> packed) and dequantizers (-> f32, whole or one row at a time), one file
//! per format with its block layout at the top:
//!
//! - [`e2m1`]: the FP4 element (codes, RNE rounding, nibble order);
//! - [`fp8`]: the FP8 E4M3 element (bit-exact with torch's cast);
//! - [`nvfp4`]: E2M1 x 16 + E4M3 block scale + f32 tensor scale, in ModelOpt's
//!   and compressed-tensors' conventions;
//! - [`mxfp4`]: E2M1 x 32 + E8M0 scale (OCP MX), gpt-oss's `*_blocks`/`*_scales`;
//! - [`fp8_weight`]: E4M3 weights with per-tensor, per-channel or block scales;
//! - [`int8`]: per-channel symmetric INT8;
//! - [`int4`]: group-wise INT4, symmetric or with zero points (compressed-tensors
//!   `pack-quantized`);
//! - [`ggml`]: llama.cpp's block formats (Q4_0 .. Q8_0, Q2_K .. Q6_K) as GGUF
//!   stores them, read from GGUF files (there is no quantizer for them here);
//! - [`device_layout`]: how the GPU backends lay out the codes and scales;
//! - [`experts`]: a stack of experts quantized an expert at a time;
//! - `rows`: some rows of a quantized matrix, as a matrix in the same format.
//!
//! A matrix is [rows, cols] = [N, K] as `nn.Linear` stores it (out, in):
//! blocks and groups run along a row (K). [`QuantizedMatrix`] holds any of
//! them; [`QuantFormat`] names a format and its variant ("nvfp4", "int4:g64").
//! Every quantizer reproduces the named tool bit for bit for f32 weights
//! (`tests/quant_formats.rs` checks it against files the tools wrote).
//! Shapes a format cannot take and non-finite weights are errors, never panics.
//!
//! # Error bounds of `dequantize(quantize(w))`, per element
//!
//! With `s` the element's effective scale and `x = w / s` (checked by
//! `tests/quant_formats.rs` on a [64, 512] matrix spanning 1e-2..10 with outliers,
//! where every bound below is reached, i.e. tight):
//!
//! - NVFP4: `|err| <= max(h(x), |x| - 6) * s`, h = half the E2M1 step around
//!   |x| (0.25 below 2, 0.5 below 4, 1 above). The E4M3 block scale is within
//!   2^-4 of `amax_b / 6` when normal, so `|x| <= 6.4` and `|err| <= s`
//!   (about `amax_b / 6`); relative RMS error about 0.09 on Gaussian weights.
//! - MXFP4: the same element bound with `s` = the power of two. OCP's
//!   `floor(log2 amax) - 2` leaves `|x|` up to 8, so `|err| <= 2 s`;
//!   compressed-tensors' rounding keeps `|x| < 7`, so `|err| <= s`. Relative RMS
//!   about 0.12.
//! - FP8 E4M3: `|err| <= 2^-4 |w|` in the normal range (`|x| >= 2^-6`), else
//!   `<= 2^-10 s`; measured max relative error 0.059, relative RMS 0.026.
//! - INT8, INT4 (symmetric or with zero point): `|err| <= s / 2`; relative RMS
//!   0.011 (INT8), 0.08-0.11 (INT4 groups of 32-128).

pub mod device_layout;
pub mod e2m1;
pub mod experts;
pub mod fp8;
pub mod fp8_weight;
pub mod ggml;
pub mod int4;
pub mod int8;
pub mod mxfp4;
pub mod nvfp4;
mod rows;

use std::fmt;
use std::str::FromStr;

pub use fp8_weight::{Fp8Scaling, Fp8Weight};
pub use ggml::{GgmlBlocks, GgmlType};
pub use int4::Int4;
pub use int8::{Int8, Int8Rule};
pub use mxfp4::{MxScaleRule, Mxfp4};
pub use nvfp4::{Nvfp4, Nvfp4Convention};

use crate::error::{Error, Result};

/// What every quantized matrix offers a matmul.
pub trait QuantMatrix {
    /// N, the output features.
    fn rows(&self) -> usize;
    /// K, the input features.
    fn cols(&self) -> usize;
    /// Bytes of packed data and scales.
    fn storage_bytes(&self) -> usize;
    /// Writes row `row` (K values) into `out` (`out.len()` must be K).
    fn dequantize_row_into(&self, row: usize, out: &mut [f32]) -> Result<()>;
    /// The whole matrix, [rows, cols] row-major.
    fn dequantize(&self) -> Vec<f32> {
        let (rows, cols) = (self.rows(), self.cols());
        let mut out = vec![0f32; rows * cols];
        for (r, o) in out.chunks_exact_mut(cols.max(1)).enumerate() {
            self.dequantize_row_into(r, o).expect("row and length are in range by construction");
        }
        out
    }
}

/// A format and its variant. Parses from (case-insensitive):
/// `nvfp4` (= `nvfp4:modelopt`), `nvfp4:ct` (compressed-tensors), `mxfp4`
/// (= `mxfp4:ocp`), `mxfp4:ct`, `fp8` (= `fp8:tensor`), `fp8:channel`,
/// `fp8:block` (128 x 128), `fp8:block<B>` (B x B), `fp8:block<R>x<C>`, `int8` (= `int8:ct`),
/// `int8:modelopt`, `int4` (groups of 128, symmetric), `int4:g<G>`,
/// `int4:asym` / `int4:g<G>:asym` (zero points), and the GGUF block formats
/// by their ggml names (`q4_0`, `q4_k`, ...: read from files, not made here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    Nvfp4(Nvfp4Convention),
    Mxfp4(MxScaleRule),
    Fp8(Fp8Scaling),
    Int8(Int8Rule),
    Int4 {
        group: usize,
        symmetric: bool,
    },
    /// One of [`ggml::PACKED_TYPES`].
    Ggml(GgmlType),
}

impl FromStr for QuantFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let mut parts = lower.split(':');
        let name = parts.next().unwrap_or_default();
        let opts: Vec<&str> = parts.collect();
        let bad = || {
            Error::Request(format!(
                "unknown quantization format {s:?}; expected e.g. nvfp4, nvfp4:ct, mxfp4, mxfp4:ct, fp8, fp8:channel, fp8:block, int8, int8:modelopt, int4, int4:g64, int4:g32:asym"
            ))
        };
        let one = |opts: &[&str]| -> Result<Option<String>> {
            match opts {
                [] => Ok(None),
                [o] => Ok(Some(o.to_string())),
                _ => Err(bad()),
            }
        };
        Ok(match name {
            "nvfp4" => QuantFormat::Nvfp4(match one(&opts)?.as_deref() {
                None | Some("modelopt") => Nvfp4Convention::ModelOpt,
                Some("ct" | "compressed-tensors") => Nvfp4Convention::CompressedTensors,
                _ => return Err(bad()),
            }),
            "mxfp4" => QuantFormat::Mxfp4(match one(&opts)?.as_deref() {
                None | Some("ocp") => MxScaleRule::Ocp,
                Some("ct" | "compressed-tensors") => MxScaleRule::CompressedTensors,
                _ => return Err(bad()),
            }),
            "fp8" => QuantFormat::Fp8(match one(&opts)?.as_deref() {
                None | Some("tensor") => Fp8Scaling::PerTensor,
                Some("channel") => Fp8Scaling::PerChannel,
                Some("block") => Fp8Scaling::DEEPSEEK_BLOCK,
                Some(o) => {
                    let dims = o.strip_prefix("block").ok_or_else(bad)?;
                    let (r, c) = dims.split_once('x').unwrap_or((dims, dims));
                    match (r.parse::<usize>(), c.parse::<usize>()) {
                        (Ok(rows), Ok(cols)) if rows > 0 && cols > 0 => Fp8Scaling::Block { rows, cols },
                        _ => return Err(bad()),
                    }
                }
            }),
            "int8" => QuantFormat::Int8(match one(&opts)?.as_deref() {
                None | Some("ct" | "compressed-tensors") => Int8Rule::CompressedTensors,
                Some("modelopt") => Int8Rule::ModelOpt,
                _ => return Err(bad()),
            }),
            "int4" => {
                let (mut group, mut symmetric) = (None, None);
                for o in opts {
                    match o {
                        "sym" if symmetric.is_none() => symmetric = Some(true),
                        "asym" if symmetric.is_none() => symmetric = Some(false),
                        g if group.is_none() && g.starts_with('g') => {
                            group = Some(g[1..].parse::<usize>().map_err(|_| bad())?);
                        }
                        _ => return Err(bad()),
                    }
                }
                let group = group.unwrap_or(128);
                if group < 2 || group % 2 != 0 {
                    return Err(Error::Request(format!("{s:?}: the INT4 group size must be even and at least 2")));
                }
                QuantFormat::Int4 { group, symmetric: symmetric.unwrap_or(true) }
            }
            _ => match ggml::PACKED_TYPES.iter().find(|t| t.name().eq_ignore_ascii_case(name)) {
                Some(&ty) if opts.is_empty() => QuantFormat::Ggml(ty),
                _ => return Err(bad()),
            },
        })
    }
}

impl QuantFormat {
    /// Whether a [rows, cols] matrix can be quantized to this format (its
    /// rows split into whole blocks or groups): the error
    /// [`QuantizedMatrix::quantize`] would give, found before any weight is read.
    pub fn check_shape(self, rows: usize, cols: usize) -> Result<()> {
        let (op, block) = match self {
            QuantFormat::Nvfp4(_) => ("nvfp4", Nvfp4::BLOCK),
            QuantFormat::Mxfp4(_) => ("mxfp4", Mxfp4::BLOCK),
            QuantFormat::Fp8(_) => ("fp8", 1),
            QuantFormat::Int8(_) => ("int8", 1),
            QuantFormat::Int4 { group, .. } => ("int4", group.max(1)),
            QuantFormat::Ggml(ty) => ("ggml", ty.block_size()),
        };
        check_shape(op, rows, cols, block)
    }

    /// Bytes a [rows, cols] matrix takes in this format, before quantizing
    /// it: what [`QuantizedMatrix::storage_bytes`] will say (a test checks
    /// them equal for every format), for memory estimates made before loading.
    pub fn storage_bytes(self, rows: usize, cols: usize) -> usize {
        let n = rows * cols;
        match self {
            // E2M1 codes, an e4m3 scale per 16, the f32 global scale
            QuantFormat::Nvfp4(_) => n / 2 + n / 16 + 4,
            // E2M1 codes, an e8m0 scale per 32
            QuantFormat::Mxfp4(_) => n / 2 + n / 32,
            QuantFormat::Fp8(scaling) => n + 4 * scaling.scale_shape(rows, cols).iter().product::<usize>(),
            QuantFormat::Int8(_) => n + 4 * rows,
            // 4-bit codes, an f32 scale per group, 4-bit zero points when asymmetric
            QuantFormat::Int4 { group, symmetric } => {
                let groups = n / group.max(1);
                n / 2 + 4 * groups + if symmetric { 0 } else { groups.div_ceil(2) }
            }
            QuantFormat::Ggml(ty) => ty.bytes_for(n).unwrap_or(n * 4),
        }
    }
}

impl fmt::Display for QuantFormat {
    /// The canonical spelling, which parses back to the same format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantFormat::Nvfp4(Nvfp4Convention::ModelOpt) => write!(f, "nvfp4"),
            QuantFormat::Nvfp4(Nvfp4Convention::CompressedTensors) => write!(f, "nvfp4:ct"),
            QuantFormat::Mxfp4(MxScaleRule::Ocp) => write!(f, "mxfp4"),
            QuantFormat::Mxfp4(MxScaleRule::CompressedTensors) => write!(f, "mxfp4:ct"),
            QuantFormat::Fp8(Fp8Scaling::PerTensor) => write!(f, "fp8"),
            QuantFormat::Fp8(Fp8Scaling::PerChannel) => write!(f, "fp8:channel"),
            QuantFormat::Fp8(Fp8Scaling::Block { rows, cols }) if rows == cols => write!(f, "fp8:block{rows}"),
            QuantFormat::Fp8(Fp8Scaling::Block { rows, cols }) => write!(f, "fp8:block{rows}x{cols}"),
            QuantFormat::Int8(Int8Rule::CompressedTensors) => write!(f, "int8"),
            QuantFormat::Int8(Int8Rule::ModelOpt) => write!(f, "int8:modelopt"),
            QuantFormat::Int4 { group, symmetric: true } => write!(f, "int4:g{group}"),
            QuantFormat::Int4 { group, symmetric: false } => write!(f, "int4:g{group}:asym"),
            QuantFormat::Ggml(ty) => write!(f, "{}", ty.name().to_ascii_lowercase()),
        }
    }
}

/// Packed data and scales of any format.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantizedMatrix {
    Nvfp4(Nvfp4),
    Mxfp4(Mxfp4),
    Fp8(Fp8Weight),
    Int8(Int8),
    Int4(Int4),
    Ggml(GgmlBlocks),
}

impl QuantizedMatrix {
    /// Quantizes row-major f32 weights `w` [rows, cols] into `format`. Errors:
    /// `w.len() != rows * cols`, an empty matrix, `cols` not a multiple of the
    /// format's block or group, a non-finite weight, a GGUF block format
    /// (those are read from files as stored, never made here).
    pub fn quantize(format: QuantFormat, w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        Ok(match format {
            QuantFormat::Nvfp4(c) => QuantizedMatrix::Nvfp4(Nvfp4::quantize(c, w, rows, cols)?),
            QuantFormat::Mxfp4(r) => QuantizedMatrix::Mxfp4(Mxfp4::quantize(r, w, rows, cols)?),
            QuantFormat::Fp8(s) => QuantizedMatrix::Fp8(Fp8Weight::quantize(s, w, rows, cols)?),
            QuantFormat::Int8(r) => QuantizedMatrix::Int8(Int8::quantize(r, w, rows, cols)?),
            QuantFormat::Int4 { group, symmetric } => {
                QuantizedMatrix::Int4(Int4::quantize(group, symmetric, w, rows, cols)?)
            }
            QuantFormat::Ggml(ty) => {
                return Err(Error::Request(format!(
                    "{format}: Ferrum reads {ty} blocks from GGUF files as stored but does not quantize to them"
                )));
            }
        })
    }

    /// The stored layout's format. For formats whose variants differ only in
    /// how the quantizer picks scales (MXFP4, INT8) the stored data does not
    /// say which was used; this reports the default variant for those.
    pub fn format(&self) -> QuantFormat {
        match self {
            QuantizedMatrix::Nvfp4(m) => QuantFormat::Nvfp4(m.convention()),
            QuantizedMatrix::Mxfp4(_) => QuantFormat::Mxfp4(MxScaleRule::Ocp),
            QuantizedMatrix::Fp8(m) => QuantFormat::Fp8(m.scaling()),
            QuantizedMatrix::Int8(_) => QuantFormat::Int8(Int8Rule::CompressedTensors),
            QuantizedMatrix::Int4(m) => QuantFormat::Int4 { group: m.group(), symmetric: m.is_symmetric() },
            QuantizedMatrix::Ggml(m) => QuantFormat::Ggml(m.ty()),
        }
    }

    fn inner(&self) -> &dyn QuantMatrix {
        match self {
            QuantizedMatrix::Nvfp4(m) => m,
            QuantizedMatrix::Mxfp4(m) => m,
            QuantizedMatrix::Fp8(m) => m,
            QuantizedMatrix::Int8(m) => m,
            QuantizedMatrix::Int4(m) => m,
            QuantizedMatrix::Ggml(m) => m,
        }
    }

    pub fn rows(&self) -> usize {
        self.inner().rows()
    }

    pub fn cols(&self) -> usize {
        self.inner().cols()
    }

    pub fn storage_bytes(&self) -> usize {
        self.inner().storage_bytes()
    }

    pub fn dequantize_row_into(&self, row: usize, out: &mut [f32]) -> Result<()> {
        self.inner().dequantize_row_into(row, out)
    }

    pub fn dequantize(&self) -> Vec<f32> {
        self.inner().dequantize()
    }
}

// Shared checks.

/// `len` values of a [rows, cols] matrix, both non-zero, `cols` a multiple of `block`.
pub(crate) fn check_matrix(op: &'static str, len: usize, rows: usize, cols: usize, block: usize) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(Error::op(op, format!("matrix [{rows}, {cols}] is empty")));
    }
    if rows.checked_mul(cols) != Some(len) {
        return Err(Error::op(op, format!("{len} values do not form a [{rows}, {cols}] matrix")));
    }
    if !cols.is_multiple_of(block) {
        return Err(Error::op(op, format!("{cols} columns are not a multiple of the block size {block}")));
    }
    Ok(())
}

/// A [rows, cols] shape (no data yet): both non-zero, no overflow, `cols` a multiple of `block`.
pub(crate) fn check_shape(op: &'static str, rows: usize, cols: usize, block: usize) -> Result<()> {
    let len = rows.checked_mul(cols).ok_or_else(|| Error::op(op, format!("shape [{rows}, {cols}] overflows")))?;
    check_matrix(op, len, rows, cols, block)
}

pub(crate) fn check_finite(op: &'static str, w: &[f32]) -> Result<()> {
    match w.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::op(op, format!("weight {i} is {}; only finite weights can be quantized", w[i]))),
        None => Ok(()),
    }
}

pub(crate) fn check_row(op: &'static str, row: usize, rows: usize, out_len: usize, cols: usize) -> Result<()> {
    if row >= rows {
        return Err(Error::op(op, format!("row {row} out of range ({rows} rows)")));
    }
    if out_len != cols {
        return Err(Error::op(op, format!("output row holds {out_len} values, the matrix has {cols} columns")));
    }
    Ok(())
}
