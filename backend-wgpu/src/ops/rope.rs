//! rope: one invocation per element, over windows of tokens.

use ferrum_engine::ops::{Rope, RopeStyle};
use ferrum_engine::{Result, Tensor};

use super::{Ctx, bytes, u32_of};
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::PipelineKey;
use crate::window::{Rows, groups_2d, ranges, whole};

/// Mirrors `Params` in shaders/rope.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct RopeParams {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    half: u32,
    t0: u32,
    x_base: u32,
    out_base: u32,
    interleaved: u32,
    attention_scale: f32,
    _pad: [u32; 3],
}

const WG: u64 = 256;

pub(super) fn plan(p: &Rope, inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let (x, positions, inv_freq) = (inputs[0], inputs[1], inputs[2]);
    let (heads, head_dim) = (x.shape()[1], x.shape()[2]);
    let l = &ctx.limits;
    let (xr, or) = (Rows::of(x)?, Rows::of(out)?);
    let pos_binding = whole(positions, "rope positions", l)?;
    let freq_binding = whole(inv_freq, "rope inv_freq", l)?;
    let key = PipelineKey::new("rope", "main", &[Read, Read, Read, ReadWrite]);
    let mut dispatches = Vec::new();
    for (first, tokens) in ranges(xr.rows, xr.per_window(l)?.min(or.per_window(l)?)) {
        let (xw, ow) = (xr.window(first, tokens, l), or.window(first, tokens, l));
        let params = RopeParams {
            tokens: u32_of(tokens, "tokens in a window")?,
            heads: u32_of(heads, "heads")?,
            head_dim: u32_of(head_dim, "head_dim")?,
            half: u32_of(inv_freq.shape()[0], "rotary_dim / 2")?,
            t0: u32_of(first, "first token")?,
            x_base: xw.base,
            out_base: ow.base,
            interleaved: (p.style == RopeStyle::Interleaved) as u32,
            attention_scale: p.attention_scale,
            _pad: [0; 3],
        };
        dispatches.push(Dispatch {
            pipeline: key.clone(),
            params: bytes(&params),
            bindings: vec![xw.binding, pos_binding.clone(), freq_binding.clone(), ow.binding],
            groups: groups_2d(((tokens * xr.row_elems) as u64).div_ceil(WG), l)?,
        });
    }
    Ok(dispatches)
}
