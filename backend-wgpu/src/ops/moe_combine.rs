//! moe_combine: one invocation per out element (shaders/moe_combine.wgsl),
//! over windows of tokens: a token's K rows of y, its route row and its out
//! row are in the same dispatch.

use ferrum_engine::{Result, Tensor};

use super::{Ctx, bytes, u32_of};
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::PipelineKey;
use crate::window::{Rows, groups_2d, ranges};

/// Mirrors `Params` in shaders/moe_combine.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct MoeCombineParams {
    tokens: u32,
    top_k: u32,
    n: u32,
    y_base: u32,
    route_base: u32,
    out_base: u32,
    _pad: [u32; 2],
}

/// `WG` in the shader.
const WG: usize = 256;

pub(super) fn plan(inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let (y, route) = (inputs[0], inputs[1]);
    let (tokens, top_k, n) = (route.shape()[0], route.shape()[1] / 2, y.shape()[1]);
    let l = &ctx.limits;
    let (yr, rr, or) = (Rows::of(y)?, Rows::of(route)?, Rows::of(out)?);
    let per_t = yr.groups_per_window(top_k, "a token's rows of y", l)?.min(rr.per_window(l)?).min(or.per_window(l)?);
    let key = PipelineKey::new("moe_combine", "main", &[Read, Read, ReadWrite]);
    let mut dispatches = Vec::new();
    for (t0, count) in ranges(tokens, per_t) {
        let yw = yr.window(t0 * top_k, count * top_k, l);
        let (rw, ow) = (rr.window(t0, count, l), or.window(t0, count, l));
        let params = MoeCombineParams {
            tokens: u32_of(count, "tokens in a window")?,
            top_k: u32_of(top_k, "top_k")?,
            n: u32_of(n, "n")?,
            y_base: yw.base,
            route_base: rw.base,
            out_base: ow.base,
            _pad: [0; 2],
        };
        dispatches.push(Dispatch {
            pipeline: key.clone(),
            params: bytes(&params),
            bindings: vec![yw.binding, rw.binding, ow.binding],
            groups: groups_2d((count * n).div_ceil(WG) as u64, l)?,
        });
    }
    Ok(dispatches)
}
