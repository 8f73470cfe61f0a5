//! index_topk: DeepSeek-V3.2's lightning indexer, which picks the cached
//! positions each token's attention may see (DeepSeek Sparse Attention).
//!
//! Token t (sequence s = token_seq[t], position p = positions[t]) scores
//! every position j <= p against its own small key cache:
//! `score_j = sum_h w[t, h] * relu(q[t, h]·k_j)`. The indexer's positive
//! factors (its softmax scale, heads^-1/2) multiply every score alike and
//! cannot change which positions win, so the op takes none. `out[t]` lists
//! the chosen positions in ascending order: all of 0..=p when p < top_k,
//! else the top_k best scores (compared as numbers, -0 = +0), a tie going to
//! the earlier position; the rest
//! of the row is `u32::MAX`. `attention` given this list attends to those
//! positions only. Position j lives in cache slot
//! `block_tables[s, j / block_size] * block_size + j % block_size`.

use super::attention::check_visible_pages;
use super::{Contract, FloatSlice, Operand, TensorSpec, dot, expect_dtype, expect_inputs, expect_rank};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// What fills a row of `out` past its chosen positions.
pub const NO_POSITION: u32 = u32::MAX;

/// Inputs: q [T, heads, d] f32, w [T, heads] f32, k_cache [slots, 1, d] in a
/// cache dtype, block_tables [seqs, max_blocks] u32, token_seq [T] u32,
/// positions [T] u32. Output: [T, top_k] u32 positions.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexTopk {
    pub block_size: usize,
    pub top_k: usize,
}

impl IndexTopk {
    /// f32 activations; the key cache (input 2) in any cache dtype.
    pub const CONTRACT: Contract = Contract { operand: Operand::Cache { input: Some(2) }, in_place: false };

    const NAME: &'static str = "index_topk";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, 6)?;
        let [q, w, k, tables, seq, pos] = inputs else { unreachable!() };
        expect_rank(Self::NAME, "q", q, 3)?;
        expect_rank(Self::NAME, "w", w, 2)?;
        expect_rank(Self::NAME, "k_cache", k, 3)?;
        expect_rank(Self::NAME, "block_tables", tables, 2)?;
        expect_rank(Self::NAME, "token_seq", seq, 1)?;
        expect_rank(Self::NAME, "positions", pos, 1)?;
        expect_dtype(Self::NAME, "q", q, &[DType::F32])?;
        expect_dtype(Self::NAME, "w", w, &[DType::F32])?;
        expect_dtype(Self::NAME, "k_cache", k, &DType::CACHE)?;
        for (what, t) in [("block_tables", tables), ("token_seq", seq), ("positions", pos)] {
            expect_dtype(Self::NAME, what, t, &[DType::U32])?;
        }
        let (t, heads, d) = (q.shape[0], q.shape[1], q.shape[2]);
        if w.shape != [t, heads] {
            return Err(Error::op(Self::NAME, format!("w {:?} for q {:?}", w.shape, q.shape)));
        }
        if k.shape[1] != 1 || k.shape[2] != d {
            return Err(Error::op(Self::NAME, format!("k_cache {:?} must be [slots, 1, {d}]", k.shape)));
        }
        if seq.shape[0] != t || pos.shape[0] != t {
            return Err(Error::op(Self::NAME, "token_seq and positions need one entry per token"));
        }
        if self.top_k == 0 {
            return Err(Error::op(Self::NAME, "top_k must be positive"));
        }
        if self.block_size == 0 || k.shape[0] % self.block_size != 0 {
            return Err(Error::op(
                Self::NAME,
                format!("{} slots are not whole blocks of {}", k.shape[0], self.block_size),
            ));
        }
        Ok(TensorSpec::new(&[t, self.top_k], DType::U32))
    }

    /// The host index checks, as `Attention::check_pages` without a window.
    pub fn check_pages(
        &self,
        block_tables: &[u32],
        max_blocks: usize,
        num_slots: usize,
        token_seq: &[u32],
        positions: &[u32],
    ) -> Result<()> {
        check_visible_pages(
            Self::NAME,
            self.block_size,
            None,
            block_tables,
            max_blocks,
            num_slots,
            token_seq,
            positions,
        )
    }

    /// q (T, heads, d), w (T, heads), k_cache (slots, 1, d), block_tables
    /// (seqs, max_blocks), token_seq (T,), positions (T,) -> out (T, top_k)
    #[allow(clippy::too_many_arguments)]
    pub fn reference(
        &self,
        q: &[f32],
        w: &[f32],
        k_cache: FloatSlice<'_>,
        max_blocks: usize,
        block_tables: &[u32],
        token_seq: &[u32],
        positions: &[u32],
        out: &mut [u32],
    ) -> Result<()> {
        let t_count = positions.len();
        let heads = w.len() / t_count.max(1);
        let d = q.len() / (t_count * heads).max(1);
        let num_slots = k_cache.len() / d.max(1);
        self.check_pages(block_tables, max_blocks, num_slots, token_seq, positions)?;
        let mut k_row = vec![0.0f32; d]; // (d,) one cached key as f32
        let mut scored: Vec<(f32, u32)> = Vec::new(); // (visible,) score and position
        for t in 0..t_count {
            let (s, p) = (token_seq[t] as usize, positions[t] as usize);
            let row = &mut out[t * self.top_k..][..self.top_k];
            row.fill(NO_POSITION);
            if p < self.top_k {
                row.iter_mut().zip(0..=p as u32).for_each(|(o, j)| *o = j);
                continue;
            }
            scored.clear();
            for j in 0..=p {
                let slot =
                    block_tables[s * max_blocks + j / self.block_size] as usize * self.block_size + j % self.block_size;
                k_cache.widen_into(slot * d, &mut k_row);
                let score = (0..heads)
                    .map(|h| w[t * heads + h] * dot(&q[(t * heads + h) * d..][..d], &k_row).max(0.0))
                    .sum::<f32>();
                scored.push((if score == 0.0 { 0.0 } else { score }, j as u32)); // -0 ties with +0
            }
            // best first, the earlier position first among equals: a total
            // order, so a partial selection (O(p)) keeps the same top_k
            let better = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
            scored.select_nth_unstable_by(self.top_k - 1, better);
            row.iter_mut().zip(&scored[..self.top_k]).for_each(|(o, &(_, j))| *o = j);
            row.sort_unstable();
        }
        Ok(())
    }
}
