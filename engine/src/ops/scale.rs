//! scale: multiply every element by a constant (Gemma's sqrt(hidden)
//! embedding scale).
//!
//! `out[i] = factor * x[i]`

use super::{Contract, TensorSpec, expect_dtype, expect_inputs};
use crate::dtype::DType;
use crate::error::Result;

/// Inputs: x f32 of any shape. Output: that shape, f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Scale {
    pub factor: f32,
}

impl Scale {
    /// What every backend honours: f32 activations.
    pub const CONTRACT: Contract = Contract::F32;

    const NAME: &'static str = "scale";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, 1)?;
        expect_dtype(Self::NAME, "x", &inputs[0], &[DType::F32])?;
        Ok(inputs[0].clone())
    }

    /// x (n,) -> out (n,)
    pub fn reference(&self, x: &[f32], out: &mut [f32]) {
        for i in 0..out.len() {
            out[i] = self.factor * x[i];
        }
    }
}
