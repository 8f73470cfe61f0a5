//! moe_combine: the weighted sum of each token's expert outputs, the end of
//! a mixture-of-experts block.
//!
//! `out[t, :] = sum_j route[t, j] * y[t * K + j, :]` (route's weights come
//! first in its row, see `moe_route`), summed in choice order.

use super::{Contract, TensorSpec, expect_dtype, expect_inputs, expect_rank};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Inputs: y [T*K, n] f32, route [T, 2K] f32. Output: [T, n] f32.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MoeCombine;

impl MoeCombine {
    /// What every backend honours: f32 activations.
    pub const CONTRACT: Contract = Contract::F32;

    const NAME: &'static str = "moe_combine";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, 2)?;
        let (y, route) = (&inputs[0], &inputs[1]);
        expect_rank(Self::NAME, "y", y, 2)?;
        expect_dtype(Self::NAME, "y", y, &[DType::F32])?;
        expect_rank(Self::NAME, "route", route, 2)?;
        expect_dtype(Self::NAME, "route", route, &[DType::F32])?;
        let (tokens, two_k) = (route.shape[0], route.shape[1]);
        if two_k == 0 || !two_k.is_multiple_of(2) || y.shape[0] != tokens * (two_k / 2) {
            return Err(Error::op(Self::NAME, format!("y {:?} and route {:?} disagree", y.shape, route.shape)));
        }
        Ok(TensorSpec::new(&[tokens, y.shape[1]], DType::F32))
    }

    /// y (T*K, n), route (T, 2K) -> out (T, n)
    pub fn reference(&self, y: &[f32], route: &[f32], top_k: usize, out: &mut [f32]) {
        let n = out.len() / (route.len() / (2 * top_k)).max(1);
        if n == 0 {
            return;
        }
        for (t, o) in out.chunks_exact_mut(n).enumerate() {
            o.fill(0.0);
            for j in 0..top_k {
                let w = route[t * 2 * top_k + j];
                let y_row = &y[(t * top_k + j) * n..(t * top_k + j + 1) * n];
                for (o, &v) in o.iter_mut().zip(y_row) {
                    *o += w * v;
                }
            }
        }
    }
}
