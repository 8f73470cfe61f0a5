//! add: elementwise sum of two tensors of one shape (residual connections).
//!
//! `out[i] = a[i] + b[i]`

use super::{Contract, TensorSpec, expect_dtype, expect_inputs};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Inputs: a, b f32 of the same shape. Output: that shape, f32.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Add;

impl Add {
    /// What every backend honours: f32 activations.
    pub const CONTRACT: Contract = Contract::F32;

    const NAME: &'static str = "add";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, 2)?;
        expect_dtype(Self::NAME, "a", &inputs[0], &[DType::F32])?;
        expect_dtype(Self::NAME, "b", &inputs[1], &[DType::F32])?;
        if inputs[0].shape != inputs[1].shape {
            return Err(Error::op(
                Self::NAME,
                format!("shapes differ: {:?} vs {:?}", inputs[0].shape, inputs[1].shape),
            ));
        }
        Ok(inputs[0].clone())
    }

    /// a (n,), b (n,) -> out (n,)
    pub fn reference(&self, a: &[f32], b: &[f32], out: &mut [f32]) {
        for i in 0..out.len() {
            out[i] = a[i] + b[i];
        }
    }
}
