//! rms_norm: root-mean-square normalisation of each row, then a per-column gain.
//!
//! `out[r, c] = x[r, c] / sqrt(mean_c(x[r, :]^2) + eps) * g[c]`, where
//! `g = w` (Llama) or `g = 1 + w` (Gemma stores the gain as an offset),
//! then `+ b[c]` given a bias. Applied per head (Qwen3's q/k norm) by viewing
//! [T, heads, d] as [T*heads, d]. A LayerNorm is this with a bias, once the
//! projection before it subtracts each row's mean (folded into its weight
//! at load, as DeepSeek-V3.2's indexer key does).

use super::{Contract, TensorSpec, expect_dtype, expect_inputs, expect_rank};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Inputs: x [rows, cols] f32, w [cols] f32, optional b [cols] f32. Output: [rows, cols] f32.
#[derive(Clone, Debug, PartialEq)]
pub struct RmsNorm {
    pub eps: f32,
    /// Gemma: the stored weight is `gain - 1`.
    pub unit_offset: bool,
}

impl RmsNorm {
    /// What every backend honours: f32 activations.
    pub const CONTRACT: Contract = Contract::F32;

    const NAME: &'static str = "rms_norm";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, inputs.len().clamp(2, 3))?;
        let (x, w) = (&inputs[0], &inputs[1]);
        if let Some(b) = inputs.get(2) {
            expect_dtype(Self::NAME, "b", b, &[DType::F32])?;
            if b.shape != w.shape {
                return Err(Error::op(Self::NAME, format!("b {:?} for w {:?}", b.shape, w.shape)));
            }
        }
        expect_rank(Self::NAME, "x", x, 2)?;
        expect_rank(Self::NAME, "w", w, 1)?;
        expect_dtype(Self::NAME, "x", x, &[DType::F32])?;
        expect_dtype(Self::NAME, "w", w, &[DType::F32])?;
        if w.shape[0] != x.shape[1] {
            return Err(Error::op(Self::NAME, format!("w has {} columns, x has {}", w.shape[0], x.shape[1])));
        }
        Ok(x.clone())
    }

    /// x (rows, cols), w (cols,), b (cols,) -> out (rows, cols)
    pub fn reference(&self, x: &[f32], w: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
        let cols = w.len();
        if cols == 0 {
            return; // rows of nothing: nothing to normalise
        }
        for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
            let mean_sq = xr.iter().map(|v| v * v).sum::<f32>() / cols as f32;
            let inv_rms = 1.0 / (mean_sq + self.eps).sqrt();
            for c in 0..cols {
                let gain = if self.unit_offset { 1.0 + w[c] } else { w[c] };
                or[c] = xr[c] * inv_rms * gain + b.map_or(0.0, |b| b[c]);
            }
        }
    }
}
