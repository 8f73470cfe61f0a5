//! index_topk: host checks of the paged indices (as the reference makes),
//! then one block per token of kernels/cu/index_topk.cu, the kernel of the
//! key cache's dtype, scoring into a scratch row of max_blocks * block_size
//! floats per token allocated on the stream (and freed on it after).

use ferrum_engine::ops::IndexTopk;
use ferrum_engine::{Error, Result, Tensor};

use super::{IndexTopkParams, Launcher, by_cache_dtype, u32_of};
use crate::buffer::{CudaBuffer, cuda_buffer};

/// index_topk.cu's kernels, by cache dtype (f32, f16, bf16, fp8).
pub(super) const KERNELS: [&str; 4] = ["index_topk_f32", "index_topk_f16", "index_topk_bf16", "index_topk_fp8"];
/// Threads per block: 8 warps, each scoring its own positions.
pub(super) const BLOCK: u32 = 256;

pub(super) fn run(l: &Launcher, p: &IndexTopk, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
    let &[q, w, k_cache, tables, token_seq, positions] = inputs else {
        return Err(Error::op("index_topk", format!("expects 6 inputs, got {}", inputs.len())));
    };
    let params = params(p, q.shape(), k_cache.shape()[0], tables.shape()[1])?;
    let host = |t: &Tensor| cuda_buffer(t)?.host_u32(l.stream);
    let (num_slots, max_blocks) = (k_cache.shape()[0], tables.shape()[1]);
    p.check_pages(&host(tables)?, max_blocks, num_slots, &host(token_seq)?, &host(positions)?)?;
    let scores = CudaBuffer::zeros(l.stream, params.tokens as usize * params.score_stride as usize * 4, None)?;
    let ptr = |t: &Tensor| cuda_buffer(t).map(|b| b.ptr());
    let args =
        [ptr(q)?, ptr(w)?, ptr(k_cache)?, ptr(tables)?, ptr(token_seq)?, ptr(positions)?, scores.ptr(), ptr(out)?];
    l.launch(by_cache_dtype(k_cache.dtype(), KERNELS)?, (params.tokens.max(1), 1, 1), BLOCK, &params, &args)
}

/// The kernel's params for q [tokens, heads, head_dim] over a cache of
/// `num_slots` paged by tables of `max_blocks`.
pub(super) fn params(p: &IndexTopk, q: &[usize], num_slots: usize, max_blocks: usize) -> Result<IndexTopkParams> {
    let stride = max_blocks * p.block_size;
    u32_of(q[0] * stride, "tokens * positions")?;
    Ok(IndexTopkParams {
        tokens: u32_of(q[0], "tokens")?,
        heads: u32_of(q[1], "heads")?,
        head_dim: u32_of(q[2], "head_dim")?,
        block_size: u32_of(p.block_size, "block_size")?,
        max_blocks: u32_of(max_blocks, "max_blocks")?,
        top_k: u32_of(p.top_k, "top_k")?,
        score_stride: u32_of(stride, "positions per token")?,
        num_slots: u32_of(num_slots, "num_slots")?,
    })
}
