//! gather_rows: pick rows of a table by index (token embedding lookup, or the
//! rows whose logits are wanted).
//!
//! `out[i, :] = f32(table[ids[i], :])` (a quantized table's row dequantized)

use super::{Contract, TensorSpec, WeightRows, expect_dtype, expect_inputs, expect_rank};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Inputs: table [rows, cols] (f32|f16|bf16|quantized), ids [n] u32. Output: [n, cols] f32.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatherRows;

impl GatherRows {
    /// What every backend honours: its weight (table) may be any float or quantized dtype.
    pub const CONTRACT: Contract = Contract::weight(0);

    const NAME: &'static str = "gather_rows";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, 2)?;
        let (table, ids) = (&inputs[0], &inputs[1]);
        expect_rank(Self::NAME, "table", table, 2)?;
        if !(table.dtype.is_float() || table.dtype.is_quantized()) {
            return Err(Error::op(
                Self::NAME,
                format!("table has dtype {}, expected a float or quantized one", table.dtype),
            ));
        }
        expect_rank(Self::NAME, "ids", ids, 1)?;
        expect_dtype(Self::NAME, "ids", ids, &[DType::U32])?;
        Ok(TensorSpec::new(&[ids.shape[0], table.shape[1]], DType::F32))
    }

    /// The index check every backend makes on the host: every id names a
    /// row of the table.
    pub fn check_ids(ids: &[u32], rows: usize) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= rows) {
            Some(id) => Err(Error::op(Self::NAME, format!("index {id} out of range for {rows} rows"))),
            None => Ok(()),
        }
    }

    /// table (rows, cols), ids (n,) -> out (n, cols)
    pub fn reference(&self, table: WeightRows, [rows, cols]: [usize; 2], ids: &[u32], out: &mut [f32]) -> Result<()> {
        Self::check_ids(ids, rows)?;
        for (i, &id) in ids.iter().enumerate() {
            table.row_into(id as usize, &mut out[i * cols..(i + 1) * cols])?;
        }
        Ok(())
    }
}
