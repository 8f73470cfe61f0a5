//! kv_store: one invocation per cache word of a window of src tokens (an f32,
//! two f16/bf16 or four fp8 elements), for each window of cache slots that
//! one of those tokens writes to.

use ferrum_engine::ops::KvStore;
use ferrum_engine::{Error, Result, Tensor};

use super::{Ctx, bytes, cache_dtype, u32_of};
use crate::buffer::gpu_buffer;
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::PipelineKey;
use crate::window::{Rows, groups_2d, ranges, whole};

/// Mirrors `Params` in shaders/kv_store.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct KvStoreParams {
    tokens: u32,
    row: u32,
    t0: u32,
    src_base: u32,
    slot0: u32,
    slots: u32,
    cache_base: u32,
    _pad: u32,
}

const WG: u64 = 256;

pub(super) fn plan(p: &KvStore, inputs: &[&Tensor], cache: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let (src, slots) = (inputs[0], inputs[1]);
    let slot_host = gpu_buffer(slots)?.host_u32()?;
    p.check_slots(&slot_host)?;
    let l = &ctx.limits;
    let (sr, cr) = (Rows::of(src)?, Rows::of(cache)?);
    // one invocation writes a whole word, so a row must be whole words
    let (code, per_word) = cache_dtype("kv_store", cache.dtype())?;
    if sr.row_elems % per_word != 0 {
        return Err(Error::op(
            "kv_store",
            format!(
                "a {} cache on wgpu needs rows (kv_heads * head_dim = {}) of a multiple of {per_word} elements",
                cache.dtype(),
                sr.row_elems
            ),
        ));
    }
    let words = sr.row_elems / per_word;
    let slots_binding = whole(slots, "kv_store slots", l)?;
    let cache_windows = cr.windows(cr.per_window(l)?, l);
    let key = PipelineKey::new("kv_store", "main", &[Read, Read, ReadWrite]).constant("CACHE_DTYPE", code);
    let mut dispatches = Vec::new();
    for (first, tokens) in ranges(sr.rows, sr.per_window(l)?) {
        let sw = sr.window(first, tokens, l);
        let mine = &slot_host[first..first + tokens];
        for cw in &cache_windows {
            if !mine.iter().any(|&s| (cw.first..cw.first + cw.rows).contains(&(s as usize))) {
                continue;
            }
            let params = KvStoreParams {
                tokens: u32_of(tokens, "tokens in a window")?,
                row: u32_of(sr.row_elems, "kv_heads * head_dim")?,
                t0: u32_of(first, "first token")?,
                src_base: sw.base,
                slot0: u32_of(cw.first, "first slot")?,
                slots: u32_of(cw.rows, "slots in a window")?,
                // rows of whole words start on a word, and so does the window
                cache_base: cw.base / per_word as u32,
                _pad: 0,
            };
            dispatches.push(Dispatch {
                pipeline: key.clone(),
                params: bytes(&params),
                bindings: vec![sw.binding.clone(), slots_binding.clone(), cw.binding.clone()],
                groups: groups_2d(((tokens * words) as u64).div_ceil(WG), l)?,
            });
        }
    }
    Ok(dispatches)
}
