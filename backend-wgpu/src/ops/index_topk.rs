//! index_topk: one workgroup per token (shaders/index_topk.wgsl), scoring
//! into a scratch row of max_blocks * block_size floats per token; tokens go
//! in windows whose scratch fits one binding.

use ferrum_engine::ops::IndexTopk;
use ferrum_engine::{Error, Result, Tensor};

use super::{Ctx, bytes, cache_dtype, u32_of};
use crate::buffer::gpu_buffer;
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::PipelineKey;
use crate::window::{groups_2d, ranges, whole};

/// Mirrors `Params` in shaders/index_topk.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct IndexTopkParams {
    tokens: u32,
    t0: u32,
    heads: u32,
    head_dim: u32,
    block_size: u32,
    max_blocks: u32,
    top_k: u32,
    score_stride: u32,
}

pub(super) fn plan(p: &IndexTopk, inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let &[q, w, k_cache, tables, token_seq, positions] = inputs else {
        return Err(Error::op("index_topk", format!("expects 6 inputs, got {}", inputs.len())));
    };
    let (t, heads, head_dim) = (q.shape()[0], q.shape()[1], q.shape()[2]);
    let max_blocks = tables.shape()[1];
    let host = |t: &Tensor| -> Result<Vec<u32>> { gpu_buffer(t)?.host_u32() };
    p.check_pages(&host(tables)?, max_blocks, k_cache.shape()[0], &host(token_seq)?, &host(positions)?)?;
    let l = &ctx.limits;
    let bound = [
        whole(q, "index_topk q", l)?,
        whole(w, "index_topk w", l)?,
        whole(k_cache, "index_topk k_cache", l)?,
        whole(tables, "index_topk block_tables", l)?,
        whole(token_seq, "index_topk token_seq", l)?,
        whole(positions, "index_topk positions", l)?,
        whole(out, "index_topk out", l)?,
    ];
    let stride = max_blocks * p.block_size;
    let per_window = ((l.max_binding / 4) as usize / stride.max(1)).max(1);
    let (code, _) = cache_dtype("index_topk", k_cache.dtype())?;
    let key = PipelineKey::new("index_topk", "main", &[Read, Read, Read, Read, Read, Read, ReadWrite, ReadWrite])
        .constant("CACHE_DTYPE", code);
    let mut dispatches = Vec::new();
    for (first, tokens) in ranges(t, per_window) {
        let scores = ctx.scratch((tokens * stride * 4) as u64);
        let params = IndexTopkParams {
            tokens: u32_of(tokens, "tokens in a window")?,
            t0: u32_of(first, "first token")?,
            heads: u32_of(heads, "heads")?,
            head_dim: u32_of(head_dim, "head_dim")?,
            block_size: u32_of(p.block_size, "block_size")?,
            max_blocks: u32_of(max_blocks, "max_blocks")?,
            top_k: u32_of(p.top_k, "top_k")?,
            score_stride: u32_of(stride, "positions per token")?,
        };
        let mut bindings = bound.to_vec();
        bindings.push(scores);
        dispatches.push(Dispatch {
            pipeline: key.clone(),
            params: bytes(&params),
            bindings,
            groups: groups_2d(tokens as u64, l)?,
        });
    }
    Ok(dispatches)
}
