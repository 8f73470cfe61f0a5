//! rope: rotary position embedding, applied to each head of q or k.
//!
//! For pair i (0 <= i < rotary_dim/2) of a head at position p:
//! `theta = p * inv_freq[i]`, `(a, b) -> s * (a cos theta - b sin theta, b cos theta + a sin theta)`,
//! where `s` is `attention_scale` (1 except for YaRN). Neox style pairs
//! element i with i + rotary_dim/2 (Hugging Face's `rotate_half`); interleaved
//! style pairs 2i with 2i+1 (GPT-J). Elements past `rotary_dim` pass through.
//! Every rope scaling variant (linear, llama3, YaRN, ...) is a different
//! `inv_freq` and `attention_scale`, computed on the host from the config.

use super::{Contract, TensorSpec, expect_dtype, expect_inputs, expect_rank};
use crate::dtype::DType;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    Neox,
    Interleaved,
}

/// Inputs: x [T, heads, head_dim] f32, positions [T] u32, inv_freq [rotary_dim/2] f32.
/// Output: [T, heads, head_dim] f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    pub style: RopeStyle,
    pub attention_scale: f32,
}

impl Rope {
    /// What every backend honours: f32 activations.
    pub const CONTRACT: Contract = Contract::F32;

    const NAME: &'static str = "rope";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, 3)?;
        let (x, pos, inv_freq) = (&inputs[0], &inputs[1], &inputs[2]);
        expect_rank(Self::NAME, "x", x, 3)?;
        expect_dtype(Self::NAME, "x", x, &[DType::F32])?;
        expect_rank(Self::NAME, "positions", pos, 1)?;
        expect_dtype(Self::NAME, "positions", pos, &[DType::U32])?;
        expect_rank(Self::NAME, "inv_freq", inv_freq, 1)?;
        expect_dtype(Self::NAME, "inv_freq", inv_freq, &[DType::F32])?;
        if pos.shape[0] != x.shape[0] {
            return Err(Error::op(Self::NAME, format!("{} positions for {} rows", pos.shape[0], x.shape[0])));
        }
        if 2 * inv_freq.shape[0] > x.shape[2] {
            return Err(Error::op(
                Self::NAME,
                format!("rotary dim {} exceeds head_dim {}", 2 * inv_freq.shape[0], x.shape[2]),
            ));
        }
        Ok(x.clone())
    }

    /// x (T, heads, head_dim), positions (T,), inv_freq (rotary_dim/2,) -> out (T, heads, head_dim)
    pub fn reference(&self, x: &[f32], positions: &[u32], inv_freq: &[f32], head_dim: usize, out: &mut [f32]) {
        out.copy_from_slice(x);
        let half = inv_freq.len();
        let tokens = positions.len();
        let heads = x.len() / (tokens * head_dim).max(1);
        for t in 0..tokens {
            let p = positions[t] as f32;
            for h in 0..heads {
                let base = (t * heads + h) * head_dim;
                for (i, &f) in inv_freq.iter().enumerate() {
                    let theta = p * f;
                    let (sin, cos) = theta.sin_cos();
                    let (cos, sin) = (cos * self.attention_scale, sin * self.attention_scale);
                    let (ia, ib) = match self.style {
                        RopeStyle::Neox => (base + i, base + i + half),
                        RopeStyle::Interleaved => (base + 2 * i, base + 2 * i + 1),
                    };
                    let (a, b) = (x[ia], x[ib]);
                    out[ia] = a * cos - b * sin;
                    out[ib] = b * cos + a * sin;
                }
            }
        }
    }
}
