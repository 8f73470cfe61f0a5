//! concat: two tensors side by side along their last dimension (MLA's
//! query and latent-cache rows: the latent part next to the rotary part).
//!
//! `out[.., :m] = a[.., :]`, `out[.., m:] = b[.., :]` for a [.., m], b [.., n].

use super::{Contract, TensorSpec, expect_dtype, expect_inputs};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Inputs: a [.., m], b [.., n] f32 with the same leading dimensions. Output: [.., m + n] f32.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Concat;

impl Concat {
    /// What every backend honours: f32 activations.
    pub const CONTRACT: Contract = Contract::F32;

    const NAME: &'static str = "concat";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, 2)?;
        let (a, b) = (&inputs[0], &inputs[1]);
        expect_dtype(Self::NAME, "a", a, &[DType::F32])?;
        expect_dtype(Self::NAME, "b", b, &[DType::F32])?;
        let (Some((m, lead_a)), Some((n, lead_b))) = (a.shape.split_last(), b.shape.split_last()) else {
            return Err(Error::op(Self::NAME, "inputs need at least one dimension"));
        };
        if lead_a != lead_b {
            return Err(Error::op(
                Self::NAME,
                format!("a {:?} and b {:?} differ before the last dimension", a.shape, b.shape),
            ));
        }
        let mut shape = lead_a.to_vec();
        shape.push(m + n);
        Ok(TensorSpec::new(&shape, DType::F32))
    }

    /// a (rows, m), b (rows, n) -> out (rows, m + n)
    pub fn reference(&self, a: &[f32], b: &[f32], [m, n]: [usize; 2], out: &mut [f32]) {
        for (r, o) in out.chunks_exact_mut(m + n).enumerate() {
            o[..m].copy_from_slice(&a[r * m..(r + 1) * m]);
            o[m..].copy_from_slice(&b[r * n..(r + 1) * n]);
        }
    }
}
