//! FP8 E4M3 weights with f32 scales: per tensor, per output channel, or per
//! 2-D block (128 x 128 in DeepSeek-V3 and Qwen3 FP8 checkpoints).
//!
//! ```text
//! weight   e4m3 [N, K]                     one byte per element (see super::fp8)
//! scale    f32  [1]                        per tensor     (compressed-tensors FP8, ModelOpt FP8: `weight_scale`)
//!               [N] (stored [N, 1])        per channel    (compressed-tensors FP8_DYNAMIC: `weight_scale`)
//!               [ceil(N/bn), ceil(K/bk)]   per block      (DeepSeek-V3 / Qwen FP8: `weight_scale_inv`;
//!                                                          compressed-tensors FP8_BLOCK: `weight_scale`)
//! value = f32(e4m3) * scale   (DeepSeek's `weight_scale_inv` multiplies too, despite its name)
//! ```
//!
//! Edge blocks may be partial (N or K not a multiple of the block). The
//! quantizer is compressed-tensors' (`calculate_qparams` + its FP8 cast):
//! `scale = amax / 448` (a zero scale becomes `f32::EPSILON`, its eps), then
//! `E4M3(clamp(w / scale + 0, -448, 448))`, RNE; the `+ 0` is its symmetric
//! zero point, which turns a -0.0 weight into +0 (byte 0x00). ModelOpt's FP8
//! export computes the same per-tensor scale and `(w / scale).to(float8_e4m3fn)`,
//! identical except that it keeps -0.0 as 0x80 (same value).

use super::{QuantMatrix, check_finite, check_matrix, check_row, fp8};
use crate::error::{Error, Result};

/// Which elements share a scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fp8Scaling {
    PerTensor,
    PerChannel,
    /// `rows x cols` blocks; DeepSeek-V3 uses 128 x 128.
    Block {
        rows: usize,
        cols: usize,
    },
}

impl Fp8Scaling {
    /// DeepSeek-V3's 128 x 128 blocks.
    pub const DEEPSEEK_BLOCK: Fp8Scaling = Fp8Scaling::Block { rows: 128, cols: 128 };

    /// The shape of the scale tensor for a [rows, cols] weight.
    pub fn scale_shape(self, rows: usize, cols: usize) -> [usize; 2] {
        match self {
            Fp8Scaling::PerTensor => [1, 1],
            Fp8Scaling::PerChannel => [rows, 1],
            Fp8Scaling::Block { rows: br, cols: bc } => [rows.div_ceil(br), cols.div_ceil(bc)],
        }
    }
}

/// An FP8 E4M3 matrix [rows, cols] with f32 scales.
#[derive(Clone, Debug, PartialEq)]
pub struct Fp8Weight {
    rows: usize,
    cols: usize,
    scaling: Fp8Scaling,
    data: Vec<u8>,
    scales: Vec<f32>,
}

const OP: &str = "fp8";

fn check_scaling(scaling: Fp8Scaling) -> Result<()> {
    if let Fp8Scaling::Block { rows, cols } = scaling
        && (rows == 0 || cols == 0)
    {
        return Err(Error::op(OP, format!("block {rows}x{cols} is empty")));
    }
    Ok(())
}

impl Fp8Weight {
    /// Quantizes row-major f32 weights `w` [rows, cols] (finite values).
    pub fn quantize(scaling: Fp8Scaling, w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        check_scaling(scaling)?;
        check_matrix(OP, w.len(), rows, cols, 1)?;
        check_finite(OP, w)?;
        let [sr, sc] = scaling.scale_shape(rows, cols);
        let mut amax = vec![0f32; sr * sc];
        for r in 0..rows {
            for c in 0..cols {
                let i = scale_index(scaling, sc, r, c);
                amax[i] = amax[i].max(w[r * cols + c].abs());
            }
        }
        let scales: Vec<f32> = amax
            .iter()
            .map(|&a| {
                let s = a / 448.0;
                if s == 0.0 { f32::EPSILON } else { s }
            })
            .collect();
        let mut data = vec![0u8; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let s = scales[scale_index(scaling, sc, r, c)];
                // `+ 0.0` is compressed-tensors adding its (zero) zero point: -0.0 -> +0.0.
                data[r * cols + c] = fp8::encode_saturating(w[r * cols + c] / s + 0.0);
            }
        }
        Ok(Fp8Weight { rows, cols, scaling, data, scales })
    }

    /// A matrix from stored tensors: `data` E4M3 bytes [rows, cols] and
    /// `scales` f32 of `scaling.scale_shape(rows, cols)` (finite).
    pub fn from_parts(scaling: Fp8Scaling, rows: usize, cols: usize, data: Vec<u8>, scales: Vec<f32>) -> Result<Self> {
        check_scaling(scaling)?;
        check_matrix(OP, data.len(), rows, cols, 1)?;
        let [sr, sc] = scaling.scale_shape(rows, cols);
        if scales.len() != sr * sc {
            return Err(Error::op(
                OP,
                format!("{scaling:?} scales of [{rows}, {cols}]: need {sr}x{sc}, got {}", scales.len()),
            ));
        }
        if scales.iter().any(|s| !s.is_finite()) {
            return Err(Error::op(OP, "a scale is not finite"));
        }
        Ok(Fp8Weight { rows, cols, scaling, data, scales })
    }

    pub fn scaling(&self) -> Fp8Scaling {
        self.scaling
    }

    /// The E4M3 bytes, [rows, cols].
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The scales, row-major of `scaling().scale_shape(rows, cols)`.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }
}

fn scale_index(scaling: Fp8Scaling, scale_cols: usize, r: usize, c: usize) -> usize {
    match scaling {
        Fp8Scaling::PerTensor => 0,
        Fp8Scaling::PerChannel => r,
        Fp8Scaling::Block { rows, cols } => (r / rows) * scale_cols + c / cols,
    }
}

impl QuantMatrix for Fp8Weight {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn storage_bytes(&self) -> usize {
        self.data.len() + 4 * self.scales.len()
    }

    fn dequantize_row_into(&self, row: usize, out: &mut [f32]) -> Result<()> {
        check_row(OP, row, self.rows, out.len(), self.cols)?;
        let data = &self.data[row * self.cols..(row + 1) * self.cols];
        let sc = self.scaling.scale_shape(self.rows, self.cols)[1];
        match self.scaling {
            Fp8Scaling::PerTensor | Fp8Scaling::PerChannel => {
                let s = self.scales[scale_index(self.scaling, sc, row, 0)];
                for (y, &b) in out.iter_mut().zip(data) {
                    *y = fp8::decode(b) * s;
                }
            }
            Fp8Scaling::Block { rows, cols } => {
                let srow = &self.scales[(row / rows) * sc..(row / rows + 1) * sc];
                for ((o, d), &s) in out.chunks_mut(cols).zip(data.chunks(cols)).zip(srow) {
                    for (y, &b) in o.iter_mut().zip(d) {
                        *y = fp8::decode(b) * s;
                    }
                }
            }
        }
        Ok(())
    }
}
