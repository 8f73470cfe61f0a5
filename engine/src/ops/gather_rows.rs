//! gather_rows: pick rows of a table by index (token embedding lookup, or the
//! rows whose logits are wanted).
//!
//! `out[i, :] = f32(table[ids[i], :])`

use super::{FLOATS, FloatSlice, TensorSpec, expect_dtype, expect_inputs, expect_rank};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Inputs: table [rows, cols] (f32|f16|bf16), ids [n] u32. Output: [n, cols] f32.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatherRows;

impl GatherRows {
    const NAME: &'static str = "gather_rows";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, 2)?;
        let (table, ids) = (&inputs[0], &inputs[1]);
        expect_rank(Self::NAME, "table", table, 2)?;
        expect_dtype(Self::NAME, "table", table, FLOATS)?;
        expect_rank(Self::NAME, "ids", ids, 1)?;
        expect_dtype(Self::NAME, "ids", ids, &[DType::U32])?;
        Ok(TensorSpec::new(&[ids.shape[0], table.shape[1]], DType::F32))
    }

    /// table (rows, cols), ids (n,) -> out (n, cols)
    pub fn reference(&self, table: FloatSlice, cols: usize, ids: &[u32], out: &mut [f32]) -> Result<()> {
        let rows = table.len() / cols.max(1);
        for (i, &id) in ids.iter().enumerate() {
            let id = id as usize;
            if id >= rows {
                return Err(Error::op(Self::NAME, format!("index {id} out of range for {rows} rows")));
            }
            table.widen_into(id * cols, &mut out[i * cols..(i + 1) * cols]);
        }
        Ok(())
    }
}
