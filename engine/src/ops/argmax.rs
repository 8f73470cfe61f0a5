//! argmax: the column of the largest value in each row (greedy decoding on
//! the device, so that one u32 per sequence comes back instead of a row of
//! logits).
//!
//! `out[r] = min { c : x[r, c] = max_c' x[r, c'] }`, the max over the values
//! of the row that are not NaN.
//!
//! The rule, the host sampler's greedy rule too (`sampler::argmax` is
//! [`argmax_row`]), and every backend's:
//! - ties go to the lowest index; -0.0 and +0.0 are equal, so they tie;
//! - -inf and +inf are ordinary values: a row of -inf gives 0, the first of
//!   several +inf wins;
//! - NaN is never chosen: it ranks below every number, -inf included; a row
//!   of nothing but NaN gives 0.
//!
//! Put as a total order, which is how the GPU kernels reduce in parallel:
//! each value maps to a u32 key that orders like the floats (NaN -> 0, below
//! -inf's key 0x007f_ffff; -0.0 -> +0.0's key), and the winner is the pair
//! (key, index) with the largest key, then the smallest index. Max over a
//! total order is associative and commutative, so any reduction tree gives
//! the same answer.

use super::{Contract, TensorSpec, expect_dtype, expect_inputs, expect_rank};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Inputs: x [rows, cols] f32 with cols >= 1. Output: [rows] u32.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Argmax;

impl Argmax {
    /// What every backend honours: f32 activations.
    pub const CONTRACT: Contract = Contract::F32;

    const NAME: &'static str = "argmax";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        expect_rank(Self::NAME, "x", x, 2)?;
        expect_dtype(Self::NAME, "x", x, &[DType::F32])?;
        if x.shape[1] == 0 {
            return Err(Error::op(Self::NAME, format!("a row of 0 columns has no argmax (x is {:?})", x.shape)));
        }
        Ok(TensorSpec::new(&[x.shape[0]], DType::U32))
    }

    /// x (rows, cols) -> out (rows,)
    pub fn reference(&self, x: &[f32], cols: usize, out: &mut [u32]) {
        for (xr, o) in x.chunks_exact(cols).zip(out.iter_mut()) {
            *o = argmax_row(xr);
        }
    }
}

/// The lowest index of the largest non-NaN value of `x`; 0 when there is
/// none (empty, or all NaN).
pub fn argmax_row(x: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        // strictly greater: an equal value later in the row does not win
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAN: f32 = f32::NAN;
    const INF: f32 = f32::INFINITY;

    #[test]
    fn ties_nan_and_infinities_follow_the_rule() {
        assert_eq!(argmax_row(&[0.1, 3.0, -1.0, 2.9]), 1);
        assert_eq!(argmax_row(&[1.0, 3.0, 3.0, 3.0]), 1, "ties: lowest index");
        assert_eq!(argmax_row(&[-2.0, -0.0, 0.0, -1.0]), 1, "-0 and +0 tie");
        assert_eq!(argmax_row(&[-2.0, 0.0, -0.0]), 1);
        assert_eq!(argmax_row(&[-INF, -INF]), 0);
        assert_eq!(argmax_row(&[1.0, INF, 2.0, INF]), 1);
        assert_eq!(argmax_row(&[NAN, -5.0, 2.0, NAN]), 2, "a NaN at 0 does not stick");
        assert_eq!(argmax_row(&[-1.0, NAN, -3.0]), 0, "NaN never wins");
        assert_eq!(argmax_row(&[NAN, -INF, NAN]), 1, "NaN ranks below -inf");
        assert_eq!(argmax_row(&[NAN, NAN]), 0);
        assert_eq!(argmax_row(&[]), 0);
    }

    #[test]
    fn shape_rule() {
        let spec = |shape: &[usize], dtype| Argmax.output_spec(&[TensorSpec::new(shape, dtype)]);
        assert_eq!(spec(&[3, 7], DType::F32).unwrap(), TensorSpec::new(&[3], DType::U32));
        assert_eq!(spec(&[0, 7], DType::F32).unwrap(), TensorSpec::new(&[0], DType::U32));
        assert!(spec(&[3, 0], DType::F32).is_err());
        assert!(spec(&[7], DType::F32).is_err());
        assert!(spec(&[3, 7], DType::BF16).is_err());
        let mut out = [9; 2];
        Argmax.reference(&[1.0, 2.0, 2.0, 5.0, 5.0, 0.0], 3, &mut out);
        assert_eq!(out, [1, 0]);
    }
}
