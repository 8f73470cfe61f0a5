//! INT8 weights, symmetric, one f32 scale per output channel (row).
//!
//! ```text
//! weight        i8  [N, K]
//! weight_scale  f32 [N] (stored [N, 1])
//! value = q * scale
//! ```
//!
//! Two scale rules (rounding is half to even in both, `torch.round`):
//!
//! - [`Int8Rule::CompressedTensors`] (`INT8_W8A8` / `W8A16` channel weights,
//!   `calculate_qparams`): `scale = amax / 127.5` (the range -128..127 is 255
//!   wide), `q = round(clamp(w / scale, -128, 127))`, so `-amax` maps to -128
//!   and `+amax` to 127. A zero scale becomes `f32::EPSILON`.
//! - [`Int8Rule::ModelOpt`] (`INT8_DEFAULT_CFG` / `INT8_WEIGHT_ONLY` export,
//!   `to_quantized_weight`): `scale = amax / 127`,
//!   `q = clamp(round(w / scale), -128, 127)` (so ±amax map to ±127). A zero
//!   row gets `f32::EPSILON` too (ModelOpt divides by zero there).

use super::{QuantMatrix, check_finite, check_matrix, check_row};
use crate::error::{Error, Result};

/// How the per-row scale is derived from the row's largest magnitude.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Int8Rule {
    /// `amax / 127.5`, codes -128..=127.
    CompressedTensors,
    /// `amax / 127`, codes -127..=127 in practice.
    ModelOpt,
}

/// An INT8 matrix [rows, cols] with one scale per row.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8 {
    rows: usize,
    cols: usize,
    data: Vec<i8>,
    scales: Vec<f32>,
}

const OP: &str = "int8";

impl Int8 {
    /// Quantizes row-major f32 weights `w` [rows, cols] (finite values).
    pub fn quantize(rule: Int8Rule, w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        check_matrix(OP, w.len(), rows, cols, 1)?;
        check_finite(OP, w)?;
        let mut data = vec![0i8; rows * cols];
        let mut scales = vec![0f32; rows];
        for ((wr, qr), s) in w.chunks_exact(cols).zip(data.chunks_exact_mut(cols)).zip(scales.iter_mut()) {
            let amax = wr.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = match rule {
                Int8Rule::CompressedTensors => amax / 127.5,
                Int8Rule::ModelOpt => amax / 127.0,
            };
            *s = if scale == 0.0 { f32::EPSILON } else { scale };
            for (q, &v) in qr.iter_mut().zip(wr) {
                *q = (v / *s).clamp(-128.0, 127.0).round_ties_even() as i8;
            }
        }
        Ok(Int8 { rows, cols, data, scales })
    }

    /// A matrix from stored tensors: `data` \[rows, cols\], `scales` \[rows\] (finite).
    pub fn from_parts(rows: usize, cols: usize, data: Vec<i8>, scales: Vec<f32>) -> Result<Self> {
        check_matrix(OP, data.len(), rows, cols, 1)?;
        if scales.len() != rows {
            return Err(Error::op(OP, format!("{} scales for {rows} rows", scales.len())));
        }
        if scales.iter().any(|s| !s.is_finite()) {
            return Err(Error::op(OP, "a scale is not finite"));
        }
        Ok(Int8 { rows, cols, data, scales })
    }

    /// The codes, [rows, cols].
    pub fn data(&self) -> &[i8] {
        &self.data
    }

    /// The per-row scales.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }
}

impl QuantMatrix for Int8 {
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
        let s = self.scales[row];
        for (y, &q) in out.iter_mut().zip(&self.data[row * self.cols..(row + 1) * self.cols]) {
            *y = q as f32 * s;
        }
        Ok(())
    }
}
