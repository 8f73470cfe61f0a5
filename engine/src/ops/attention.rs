//! attention: causal scaled-dot-product attention over a paged KV cache, for
//! a batch of tokens from many sequences (prefill chunks and decode steps
//! alike), with grouped-query heads, an optional sliding window and optional
//! soft-capping of the scores.
//!
//! Token t belongs to sequence s = token_seq[t] and sits at position
//! p = positions[t]; its keys and values for positions 0..=p are already in
//! the cache. Query head h reads kv head h / (heads / kv_heads). Over the
//! visible positions j (p - j < window, or all j <= p without a window):
//! `score_j = scale * q·k_j`, then `score_j = cap * tanh(score_j / cap)` when
//! soft-capping, `out = sum_j softmax(score)_j * v_j`. With sinks (gpt-oss),
//! head h's learned logit `sinks[h]` joins the softmax's denominator only:
//! `w_j = e^score_j / (sum_i e^score_i + e^sinks[h])`. Given a list of
//! selected positions per token (`index_topk`'s, DeepSeek-V3.2), only the
//! visible positions on the list are seen; entries past p are skipped.
//! Position j lives in cache slot
//! `block_tables[s, j / block_size] * block_size + j % block_size`.

use super::{Contract, FloatSlice, Operand, TensorSpec, dot, expect_dtype, expect_inputs, expect_rank};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Inputs: q [T, heads, head_dim] f32, k_cache and v_cache [slots, kv_heads, head_dim]
/// in one cache dtype (f32, f16, bf16, fp8; widened to f32 as they are read),
/// block_tables [seqs, max_blocks] u32, token_seq [T] u32, positions [T] u32,
/// then optionally sinks [heads] f32 and optionally selected [T, n] u32
/// positions (told apart by dtype). Output: [T, heads, head_dim] f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Attention {
    pub block_size: usize,
    pub scale: f32,
    pub softcap: Option<f32>,
    /// A key at position j is visible from position p iff p - j < window.
    pub window: Option<usize>,
}

/// The shapes the reference loops need, read off the inputs.
#[derive(Clone, Copy, Debug)]
pub struct AttentionDims {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub max_blocks: usize,
}

impl Attention {
    /// f32 activations; the cache (k_cache, input 1) in any cache dtype.
    pub const CONTRACT: Contract = Contract { operand: Operand::Cache { input: Some(1) }, in_place: false };

    const NAME: &'static str = "attention";

    /// Which of the optional inputs (past the first six) are there: the
    /// index of sinks and of selected, told apart by dtype.
    pub fn optional_inputs(dtypes: &[DType]) -> Result<(Option<usize>, Option<usize>)> {
        match dtypes.get(6..).unwrap_or_default() {
            [] => Ok((None, None)),
            [DType::F32] => Ok((Some(6), None)),
            [DType::U32] => Ok((None, Some(6))),
            [DType::F32, DType::U32] => Ok((Some(6), Some(7))),
            other => Err(Error::op(
                Self::NAME,
                format!("after six inputs take sinks (f32) then selected (u32), got {other:?}"),
            )),
        }
    }

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        let dtypes: Vec<DType> = inputs.iter().map(|t| t.dtype).collect();
        let (sinks, selected) = Self::optional_inputs(&dtypes)?;
        let (sinks, selected) = (sinks.map(|i| &inputs[i]), selected.map(|i| &inputs[i]));
        let inputs = &inputs[..inputs.len().min(6)];
        expect_inputs(Self::NAME, inputs, 6)?;
        let [q, k, v, tables, seq, pos] = inputs else { unreachable!() };
        if let Some(selected) = selected {
            expect_rank(Self::NAME, "selected", selected, 2)?;
            if selected.shape[0] != q.shape[0] {
                return Err(Error::op(Self::NAME, format!("selected {:?} for {} tokens", selected.shape, q.shape[0])));
            }
        }
        if let Some(sinks) = sinks {
            expect_dtype(Self::NAME, "sinks", sinks, &[DType::F32])?;
            if sinks.shape != [q.shape[1]] {
                return Err(Error::op(Self::NAME, format!("sinks {:?} for {} heads", sinks.shape, q.shape[1])));
            }
        }
        expect_rank(Self::NAME, "q", q, 3)?;
        expect_rank(Self::NAME, "k_cache", k, 3)?;
        expect_rank(Self::NAME, "block_tables", tables, 2)?;
        expect_rank(Self::NAME, "token_seq", seq, 1)?;
        expect_rank(Self::NAME, "positions", pos, 1)?;
        expect_dtype(Self::NAME, "q", q, &[DType::F32])?;
        for (what, t) in [("k_cache", k), ("v_cache", v)] {
            expect_dtype(Self::NAME, what, t, &DType::CACHE)?;
        }
        if k.dtype != v.dtype {
            return Err(Error::op(Self::NAME, format!("k_cache is {}, v_cache {}", k.dtype, v.dtype)));
        }
        for (what, t) in [("block_tables", tables), ("token_seq", seq), ("positions", pos)] {
            expect_dtype(Self::NAME, what, t, &[DType::U32])?;
        }
        if k.shape != v.shape {
            return Err(Error::op(Self::NAME, format!("k_cache {:?} != v_cache {:?}", k.shape, v.shape)));
        }
        let (t, heads, head_dim) = (q.shape[0], q.shape[1], q.shape[2]);
        let kv_heads = k.shape[1];
        if k.shape[2] != head_dim || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(Error::op(
                Self::NAME,
                format!("q {:?} does not fit cache {:?} (heads must be a multiple of kv heads)", q.shape, k.shape),
            ));
        }
        if seq.shape[0] != t || pos.shape[0] != t {
            return Err(Error::op(Self::NAME, "token_seq and positions need one entry per token"));
        }
        if self.window == Some(0) {
            return Err(Error::op(Self::NAME, "a window of 0 sees nothing"));
        }
        if self.softcap.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
            return Err(Error::op(Self::NAME, format!("softcap must be positive, got {:?}", self.softcap)));
        }
        if self.block_size == 0 || k.shape[0] % self.block_size != 0 {
            return Err(Error::op(
                Self::NAME,
                format!("{} slots are not whole blocks of {}", k.shape[0], self.block_size),
            ));
        }
        Ok(q.clone())
    }

    /// The index checks every backend makes on the host before launching:
    /// every token's sequence has a block table, and every block its visible
    /// positions live in is inside the cache. Errors name the bad index.
    pub fn check_pages(
        &self,
        block_tables: &[u32],
        max_blocks: usize,
        num_slots: usize,
        token_seq: &[u32],
        positions: &[u32],
    ) -> Result<()> {
        let (size, window) = (self.block_size, self.window);
        check_visible_pages(Self::NAME, size, window, block_tables, max_blocks, num_slots, token_seq, positions)
    }

    /// q (T, heads, d), k_cache/v_cache (slots, kv_heads, d), block_tables (seqs, max_blocks),
    /// token_seq (T,), positions (T,), sinks (heads,), selected (T, n) -> out (T, heads, d)
    #[allow(clippy::too_many_arguments)]
    pub fn reference(
        &self,
        dims: AttentionDims,
        q: &[f32],
        k_cache: FloatSlice<'_>,
        v_cache: FloatSlice<'_>,
        block_tables: &[u32],
        token_seq: &[u32],
        positions: &[u32],
        sinks: Option<&[f32]>,
        selected: Option<&[u32]>,
        out: &mut [f32],
    ) -> Result<()> {
        let AttentionDims { heads, kv_heads, head_dim: d, max_blocks } = dims;
        let group = heads / kv_heads;
        let num_slots = k_cache.len() / (kv_heads * d);
        let seqs = block_tables.len() / max_blocks.max(1);
        let mut scores = Vec::new(); // (visible keys,) for one query head
        let (mut k_row, mut v_row) = (vec![0.0f32; d], vec![0.0f32; d]); // (d,) a cached row as f32
        for t in 0..positions.len() {
            let (s, p) = (token_seq[t] as usize, positions[t] as usize);
            if s >= seqs {
                return Err(Error::op(Self::NAME, format!("token {t} names sequence {s} of {seqs}")));
            }
            let first = match self.window {
                Some(w) => (p + 1).saturating_sub(w),
                None => 0,
            };
            if p / self.block_size >= max_blocks {
                return Err(Error::op(Self::NAME, format!("position {p} past the block table of sequence {s}")));
            }
            // slot of every visible position, checked once per token
            let mut slots = Vec::with_capacity(p + 1 - first);
            let visible: Box<dyn Iterator<Item = usize>> = match selected {
                Some(sel) => {
                    let n = sel.len() / positions.len();
                    Box::new(sel[t * n..][..n].iter().map(|&j| j as usize).filter(|&j| (first..=p).contains(&j)))
                }
                None => Box::new(first..=p),
            };
            for j in visible {
                let b = j / self.block_size;
                if b >= max_blocks {
                    return Err(Error::op(Self::NAME, format!("position {j} past the block table of sequence {s}")));
                }
                let slot = block_tables[s * max_blocks + b] as usize * self.block_size + j % self.block_size;
                if slot >= num_slots {
                    return Err(Error::op(Self::NAME, format!("slot {slot} past {num_slots} cache slots")));
                }
                slots.push(slot);
            }
            for h in 0..heads {
                let kvh = h / group;
                let q_row = &q[(t * heads + h) * d..][..d];
                scores.clear();
                for &slot in &slots {
                    k_cache.widen_into((slot * kv_heads + kvh) * d, &mut k_row);
                    let mut score = self.scale * dot(q_row, &k_row);
                    if let Some(cap) = self.softcap {
                        score = cap * (score / cap).tanh();
                    }
                    scores.push(score);
                }
                let sink = sinks.map(|s| s[h]);
                let max = scores.iter().copied().chain(sink).fold(f32::NEG_INFINITY, f32::max);
                let mut denom = 0.0f32;
                for sc in scores.iter_mut() {
                    *sc = (*sc - max).exp();
                    denom += *sc;
                }
                if let Some(sink) = sink {
                    denom += (sink - max).exp();
                }
                let o_row = &mut out[(t * heads + h) * d..][..d];
                o_row.fill(0.0);
                for (&slot, &w) in slots.iter().zip(&scores) {
                    v_cache.widen_into((slot * kv_heads + kvh) * d, &mut v_row);
                    for (o, v) in o_row.iter_mut().zip(&v_row) {
                        *o += w / denom * v;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The index checks of an op reading a paged cache: every token's sequence
/// has a block table, and every block its visible positions (within
/// `window` of it, or all before it) live in is inside the cache. Errors
/// name the op and the bad index.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_visible_pages(
    op: &'static str,
    block_size: usize,
    window: Option<usize>,
    block_tables: &[u32],
    max_blocks: usize,
    num_slots: usize,
    token_seq: &[u32],
    positions: &[u32],
) -> Result<()> {
    let err = |msg: String| Err(Error::op(op, msg));
    let seqs = block_tables.len() / max_blocks.max(1);
    let num_blocks = num_slots / block_size.max(1);
    for (t, (&s, &pos)) in token_seq.iter().zip(positions).enumerate() {
        let (s, pos) = (s as usize, pos as usize);
        if s >= seqs {
            return err(format!("token {t} names sequence {s} of {seqs}"));
        }
        if pos / block_size >= max_blocks {
            return err(format!("position {pos} past the block table of sequence {s}"));
        }
        let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        for b in first / block_size..=pos / block_size {
            let block = block_tables[s * max_blocks + b] as usize;
            if block >= num_blocks {
                let slot = block * block_size;
                return err(format!("slot {slot} past {num_slots} cache slots"));
            }
        }
    }
    Ok(())
}
