//! index_topk: shaders/index_topk.wgsl over windows of tokens. Per window,
//! `score` runs once per window of cache slots (a cache larger than one
//! binding is split as attention splits it), scoring into a scratch row of
//! max_blocks * block_size floats per token; then `select_top` picks.

use ferrum_engine::ops::IndexTopk;
use ferrum_engine::{Error, Result, Tensor};

use super::{Ctx, bytes, cache_dtype, u32_of};
use crate::buffer::gpu_buffer;
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::PipelineKey;
use crate::window::{Rows, groups_2d, ranges, whole};

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
    q_base: u32,
    w_base: u32,
    out_base: u32,
    slot0: u32,
    slots: u32,
    cache_base: u32,
    _pad: [u32; 2],
}

const STORAGE: &[crate::pipelines::Access] = &[Read, Read, Read, Read, Read, Read, ReadWrite, ReadWrite];

pub(super) fn plan(p: &IndexTopk, inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let &[q, w, k_cache, tables, token_seq, positions] = inputs else {
        return Err(Error::op("index_topk", format!("expects 6 inputs, got {}", inputs.len())));
    };
    let (heads, head_dim) = (q.shape()[1], q.shape()[2]);
    let (num_slots, max_blocks) = (k_cache.shape()[0], tables.shape()[1]);
    let host = |t: &Tensor| -> Result<Vec<u32>> { gpu_buffer(t)?.host_u32() };
    p.check_pages(&host(tables)?, max_blocks, num_slots, &host(token_seq)?, &host(positions)?)?;
    let l = &ctx.limits;
    let small = [
        whole(tables, "index_topk block_tables", l)?,
        whole(token_seq, "index_topk token_seq", l)?,
        whole(positions, "index_topk positions", l)?,
    ];
    let (qr, wr, or, kr) = (Rows::of(q)?, Rows::of(w)?, Rows::of(out)?, Rows::of(k_cache)?);
    let stride = max_blocks * p.block_size;
    let scores = Rows { buf: qr.buf, rows: qr.rows, row_elems: stride, elem_bytes: 4 };
    let per_tokens = qr.per_window(l)?.min(wr.per_window(l)?).min(or.per_window(l)?).min(scores.per_window(l)?);
    let cache_windows = kr.windows(kr.per_window(l)?, l);
    let (code, _) = cache_dtype("index_topk", k_cache.dtype())?;
    let key = |entry| PipelineKey::new("index_topk", entry, STORAGE).constant("CACHE_DTYPE", code);
    let mut dispatches = Vec::new();
    for (first, tokens) in ranges(qr.rows, per_tokens) {
        let (qw, ww, ow) = (qr.window(first, tokens, l), wr.window(first, tokens, l), or.window(first, tokens, l));
        let scratch = ctx.scratch((tokens * stride * 4) as u64);
        let params = |kw: &crate::window::Window| -> Result<IndexTopkParams> {
            Ok(IndexTopkParams {
                tokens: u32_of(tokens, "tokens in a window")?,
                t0: u32_of(first, "first token")?,
                heads: u32_of(heads, "heads")?,
                head_dim: u32_of(head_dim, "head_dim")?,
                block_size: u32_of(p.block_size, "block_size")?,
                max_blocks: u32_of(max_blocks, "max_blocks")?,
                top_k: u32_of(p.top_k, "top_k")?,
                score_stride: u32_of(stride, "positions per token")?,
                q_base: qw.base,
                w_base: ww.base,
                out_base: ow.base,
                slot0: u32_of(kw.first, "first slot")?,
                slots: u32_of(kw.rows, "slots in a window")?,
                cache_base: kw.base,
                _pad: [0; 2],
            })
        };
        let bindings = |kw: &crate::window::Window| {
            let mut b = vec![qw.binding.clone(), ww.binding.clone(), kw.binding.clone()];
            b.extend(small.iter().cloned());
            b.extend([ow.binding.clone(), scratch.clone()]);
            b
        };
        let groups = groups_2d(tokens as u64, l)?;
        for kw in &cache_windows {
            dispatches.push(Dispatch {
                pipeline: key("score"),
                params: bytes(&params(kw)?),
                bindings: bindings(kw),
                groups,
            });
        }
        let kw = cache_windows.first().ok_or_else(|| Error::op("index_topk", "an empty key cache"))?;
        dispatches.push(Dispatch {
            pipeline: key("select_top"),
            params: bytes(&params(kw)?),
            bindings: bindings(kw),
            groups,
        });
    }
    Ok(dispatches)
}
