//! kv_store: write this step's keys (or values) into their slots of a paged
//! cache (vLLM's `reshape_and_cache`). The cache is the op's output and is
//! updated in place: slots not named keep their contents.
//!
//! `cache[slots[t], :, :] = src[t, :, :]`, where a slot is
//! `block_table[pos / block_size] * block_size + pos % block_size`.
//! Slots must be distinct (GPU backends write them in parallel); the
//! reference checks it.

use super::{CacheSliceMut, Contract, Operand, TensorSpec, expect_dtype, expect_inputs, expect_rank};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Inputs: src [T, kv_heads, head_dim] f32, slots [T] u32.
/// Output (updated in place): cache [num_slots, kv_heads, head_dim] in
/// `dtype` (f32, f16, bf16 or fp8: the rows are rounded to it).
#[derive(Clone, Debug, PartialEq)]
pub struct KvStore {
    pub num_slots: usize,
    pub dtype: DType,
}

impl KvStore {
    /// f32 activations in; its output, the cache, in any cache dtype, updated in place.
    pub const CONTRACT: Contract = Contract { operand: Operand::Cache { input: None }, in_place: true };

    const NAME: &'static str = "kv_store";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, 2)?;
        let (src, slots) = (&inputs[0], &inputs[1]);
        expect_rank(Self::NAME, "src", src, 3)?;
        expect_dtype(Self::NAME, "src", src, &[DType::F32])?;
        expect_rank(Self::NAME, "slots", slots, 1)?;
        expect_dtype(Self::NAME, "slots", slots, &[DType::U32])?;
        if slots.shape[0] != src.shape[0] {
            return Err(Error::op(Self::NAME, format!("{} slots for {} rows", slots.shape[0], src.shape[0])));
        }
        if !self.dtype.is_cache() {
            return Err(Error::op(Self::NAME, format!("a cache cannot hold {}", self.dtype)));
        }
        Ok(TensorSpec::new(&[self.num_slots, src.shape[1], src.shape[2]], self.dtype))
    }

    /// The index check every backend makes on the host: every slot is in
    /// the cache, and none is named twice (backends write them in parallel,
    /// so a repeat would depend on timing).
    pub fn check_slots(&self, slots: &[u32]) -> Result<()> {
        let mut written = std::collections::HashSet::with_capacity(slots.len());
        for &slot in slots {
            if slot as usize >= self.num_slots {
                return Err(Error::op(Self::NAME, format!("slot {slot} past {} slots", self.num_slots)));
            }
            if !written.insert(slot) {
                return Err(Error::op(Self::NAME, format!("slot {slot} written twice in one step")));
            }
        }
        Ok(())
    }

    /// src (T, row), slots (T,) -> cache (num_slots, row) in its dtype, in place
    pub fn reference(&self, src: &[f32], slots: &[u32], mut cache: CacheSliceMut<'_>) -> Result<()> {
        self.check_slots(slots)?;
        let row = src.len() / slots.len().max(1);
        for (t, &slot) in slots.iter().enumerate() {
            cache.store(slot as usize * row, &src[t * row..(t + 1) * row]);
        }
        Ok(())
    }
}
