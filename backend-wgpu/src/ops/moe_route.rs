//! moe_route: one invocation per token row (shaders/moe_route.wgsl), over
//! windows of rows; the choice bias is bound whole.

use ferrum_engine::ops::{MoeRoute, RouterScoring};
use ferrum_engine::{Error, Result, Tensor};

use super::{Ctx, bytes, u32_of};
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::PipelineKey;
use crate::window::{Rows, groups_2d, ranges, whole};

/// Mirrors `Params` in shaders/moe_route.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct MoeRouteParams {
    rows: u32,
    experts: u32,
    top_k: u32,
    x_base: u32,
    out_base: u32,
    sigmoid: u32,
    has_bias: u32,
    renormalize: u32,
    groups: u32,
    top_groups: u32,
    scale: f32,
    _pad: u32,
}

/// `WG` in the shader: token rows per workgroup.
const WG: usize = 64;
/// `MAX_GROUPS` in the shader: the bits it keeps the eligible groups in.
const MAX_GROUPS: usize = 256;

pub(super) fn plan(p: &MoeRoute, inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let (logits, bias) = (inputs[0], inputs.get(1));
    let experts = logits.shape()[1];
    let (groups, top_groups) = p.groups.map_or((0, 0), |g| (g.groups, g.top_groups));
    if groups > MAX_GROUPS {
        return Err(Error::Backend(format!("wgpu moe_route takes at most {MAX_GROUPS} expert groups, not {groups}")));
    }
    let l = &ctx.limits;
    let (xr, or) = (Rows::of(logits)?, Rows::of(out)?);
    let bias_binding = bias.map(|b| whole(b, "moe_route bias", l)).transpose()?;
    let key = PipelineKey::new("moe_route", "main", &[Read, Read, ReadWrite]);
    let mut dispatches = Vec::new();
    for (first, rows) in ranges(xr.rows, xr.per_window(l)?.min(or.per_window(l)?)) {
        let (xw, ow) = (xr.window(first, rows, l), or.window(first, rows, l));
        let params = MoeRouteParams {
            rows: u32_of(rows, "rows in a window")?,
            experts: u32_of(experts, "experts")?,
            top_k: u32_of(p.top_k, "top_k")?,
            x_base: xw.base,
            out_base: ow.base,
            sigmoid: (p.scoring == RouterScoring::Sigmoid) as u32,
            has_bias: bias.is_some() as u32,
            renormalize: p.renormalize as u32,
            groups: groups as u32,
            top_groups: top_groups as u32,
            scale: p.scale,
            _pad: 0,
        };
        // without a bias, the logits stand in for it (read-only, never read)
        let b = bias_binding.clone().unwrap_or_else(|| xw.binding.clone());
        dispatches.push(Dispatch {
            pipeline: key.clone(),
            params: bytes(&params),
            bindings: vec![xw.binding, b, ow.binding],
            groups: groups_2d(rows.div_ceil(WG) as u64, l)?,
        });
    }
    Ok(dispatches)
}
