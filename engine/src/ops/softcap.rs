//! softcap: squash values smoothly into (-cap, cap) (Gemma 2's final-logit
//! soft-capping).
//!
//! `out[i] = cap * tanh(x[i] / cap)`

use super::{Contract, TensorSpec, expect_dtype, expect_inputs};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Inputs: x f32 of any shape. Output: that shape, f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Softcap {
    pub cap: f32,
}

impl Softcap {
    /// What every backend honours: f32 activations.
    pub const CONTRACT: Contract = Contract::F32;

    const NAME: &'static str = "softcap";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, 1)?;
        expect_dtype(Self::NAME, "x", &inputs[0], &[DType::F32])?;
        if !(self.cap > 0.0 && self.cap.is_finite()) {
            return Err(Error::op(Self::NAME, format!("cap must be positive, got {}", self.cap)));
        }
        Ok(inputs[0].clone())
    }

    /// x (n,) -> out (n,)
    pub fn reference(&self, x: &[f32], out: &mut [f32]) {
        for i in 0..out.len() {
            out[i] = self.cap * (x[i] / self.cap).tanh();
        }
    }
}
