//! attention: one workgroup per (token, head), over windows of tokens.
//!
//! A cache that fits one binding is bound whole (`main`). A larger one
//! (128 MiB is 32k slots of 8 kv heads x 128 dims in f32) is split into
//! windows of slots, and `windowed` runs once per window, merging each
//! window's softmax state into a scratch row per (token, head), flash-decoding
//! style; the last window writes the output. Sinks (the optional 7th input)
//! are bound whole and counted once: they start the state of `main`, or of
//! the first window. Selected positions (DeepSeek-V3.2) are bound whole.

use ferrum_engine::ops::Attention;
use ferrum_engine::{Error, Result, Tensor};

use super::{Ctx, bytes, cache_dtype, u32_of};
use crate::buffer::gpu_buffer;
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::PipelineKey;
use crate::window::{Rows, Window, groups_2d, ranges, whole};

/// Mirrors `Params` in shaders/attention.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct AttentionParams {
    tokens: u32,
    t0: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    block_size: u32,
    max_blocks: u32,
    window: u32,
    q_base: u32,
    out_base: u32,
    scale: f32,
    softcap: f32,
    slot0: u32,
    slots: u32,
    cache_base: u32,
    merge: u32,
    has_sinks: u32,
    n_selected: u32,
    _pad: [u32; 2],
}

/// `MAX_D` in the shader: head dims one workgroup holds.
const MAX_HEAD_DIM: usize = 256;
/// `merge` bits: fold in the state of earlier windows; this is the last window.
const MERGE_STATE: u32 = 1;
const LAST_WINDOW: u32 = 2;

pub(super) fn plan(p: &Attention, inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let dtypes: Vec<_> = inputs.iter().map(|t| t.dtype()).collect();
    let (sinks, selected) = Attention::optional_inputs(&dtypes)?;
    let (sinks, selected) = (sinks.map(|i| inputs[i]), selected.map(|i| inputs[i]));
    let [q, k_cache, v_cache, tables, token_seq, positions] = &inputs[..inputs.len().min(6)] else {
        return Err(Error::op("attention", format!("expects 6 to 8 inputs, got {}", inputs.len())));
    };
    let (heads, head_dim) = (q.shape()[1], q.shape()[2]);
    let (num_slots, kv_heads) = (k_cache.shape()[0], k_cache.shape()[1]);
    if head_dim > MAX_HEAD_DIM {
        return Err(Error::op("attention", format!("head_dim {head_dim} > {MAX_HEAD_DIM} is not supported on wgpu")));
    }
    let max_blocks = tables.shape()[1];
    // copies, not guards: two of these may be one tensor
    let host = |t: &Tensor| -> Result<Vec<u32>> { gpu_buffer(t)?.host_u32() };
    p.check_pages(&host(tables)?, max_blocks, num_slots, &host(token_seq)?, &host(positions)?)?;
    let l = &ctx.limits;
    let small = [
        whole(tables, "attention block_tables", l)?,
        whole(token_seq, "attention token_seq", l)?,
        whole(positions, "attention positions", l)?,
    ];
    let sinks = sinks.map(|s| whole(s, "attention sinks", l)).transpose()?;
    let n_selected = selected.map_or(0, |s| s.shape()[1]);
    let selected = selected.map(|s| whole(s, "attention selected", l)).transpose()?;
    let (qr, or, kr, vr) = (Rows::of(q)?, Rows::of(out)?, Rows::of(k_cache)?, Rows::of(v_cache)?);
    // whole caches, or windows of slots (k and v have one shape, so one plan)
    let cache_windows: Vec<(Window, Window)> = if k_cache.size_bytes() as u64 <= l.max_binding {
        vec![(kr.window(0, num_slots, l), vr.window(0, num_slots, l))]
    } else {
        let per = kr.per_window(l)?;
        ranges(num_slots, per).map(|(first, n)| (kr.window(first, n, l), vr.window(first, n, l))).collect()
    };
    let windowed = cache_windows.len() > 1;
    // a windowed cache needs a state row of head_dim + 2 floats per (token, head)
    let state_row = Rows { buf: qr.buf, rows: qr.rows, row_elems: heads * (head_dim + 2), elem_bytes: 4 };
    let mut per_tokens = qr.per_window(l)?.min(or.per_window(l)?);
    if windowed {
        per_tokens = per_tokens.min(state_row.per_window(l)?);
    }
    let (entry, storage): (_, &'static [_]) = if windowed {
        ("windowed", &[Read, Read, Read, Read, Read, Read, ReadWrite, Read, Read, ReadWrite])
    } else {
        ("main", &[Read, Read, Read, Read, Read, Read, ReadWrite, Read, Read])
    };
    // k and v share a dtype (the op's shape rule); any head_dim works, the
    // shader reads a word per element when rows are not whole words
    let (code, _) = cache_dtype("attention", k_cache.dtype())?;
    let key = PipelineKey::new("attention", entry, storage).constant("CACHE_DTYPE", code);
    let mut dispatches = Vec::new();
    for (first, tokens) in ranges(qr.rows, per_tokens) {
        let (qw, ow) = (qr.window(first, tokens, l), or.window(first, tokens, l));
        let state = windowed.then(|| ctx.scratch((tokens * state_row.row_elems * 4) as u64));
        for (i, (kw, vw)) in cache_windows.iter().enumerate() {
            let mut merge = if i > 0 { MERGE_STATE } else { 0 };
            if i + 1 == cache_windows.len() {
                merge |= LAST_WINDOW;
            }
            let params = AttentionParams {
                tokens: u32_of(tokens, "tokens in a window")?,
                t0: u32_of(first, "first token")?,
                heads: u32_of(heads, "heads")?,
                kv_heads: u32_of(kv_heads, "kv_heads")?,
                head_dim: u32_of(head_dim, "head_dim")?,
                block_size: u32_of(p.block_size, "block_size")?,
                max_blocks: u32_of(max_blocks, "max_blocks")?,
                window: u32_of(p.window.unwrap_or(0), "window")?,
                q_base: qw.base,
                out_base: ow.base,
                scale: p.scale,
                softcap: p.softcap.unwrap_or(0.0),
                slot0: u32_of(kw.first, "first slot")?,
                slots: u32_of(kw.rows, "slots in a window")?,
                cache_base: kw.base,
                merge,
                has_sinks: sinks.is_some() as u32,
                n_selected: u32_of(n_selected, "selected positions")?,
                _pad: [0; 2],
            };
            let mut bindings = vec![qw.binding.clone(), kw.binding.clone(), vw.binding.clone()];
            bindings.extend(small.iter().cloned());
            bindings.push(ow.binding.clone());
            // without sinks, q stands in for them (read-only, never read)
            bindings.push(sinks.clone().unwrap_or_else(|| qw.binding.clone()));
            // without a selection, the block tables stand in (u32, never read)
            bindings.push(selected.clone().unwrap_or_else(|| small[0].clone()));
            bindings.extend(state.clone());
            let groups = if head_dim == 0 { 0 } else { (tokens * heads) as u64 };
            dispatches.push(Dispatch {
                pipeline: key.clone(),
                params: bytes(&params),
                bindings,
                groups: groups_2d(groups, l)?,
            });
        }
    }
    Ok(dispatches)
}
