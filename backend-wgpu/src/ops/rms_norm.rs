//! rms_norm: one workgroup per row, over windows of rows.

use ferrum_engine::ops::RmsNorm;
use ferrum_engine::{Result, Tensor};

use super::{Ctx, bytes, u32_of};
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::PipelineKey;
use crate::window::{Rows, groups_2d, ranges, whole};

/// Mirrors `Params` in shaders/rms_norm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct RmsNormParams {
    rows: u32,
    cols: u32,
    x_base: u32,
    out_base: u32,
    eps: f32,
    unit_offset: u32,
    has_bias: u32,
    _pad: u32,
}

pub(super) fn plan(p: &RmsNorm, inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let (x, w) = (inputs[0], inputs[1]);
    let l = &ctx.limits;
    let (xr, or) = (Rows::of(x)?, Rows::of(out)?);
    let w_binding = whole(w, "rms_norm weight", l)?;
    // without a bias, w stands in for it (never read)
    let b_binding = inputs.get(2).map(|b| whole(b, "rms_norm bias", l)).transpose()?.unwrap_or(w_binding.clone());
    let key = PipelineKey::new("rms_norm", "main", &[Read, Read, ReadWrite, Read]);
    let mut dispatches = Vec::new();
    for (first, rows) in ranges(xr.rows, xr.per_window(l)?.min(or.per_window(l)?)) {
        let (xw, ow) = (xr.window(first, rows, l), or.window(first, rows, l));
        let params = RmsNormParams {
            rows: u32_of(rows, "rows in a window")?,
            cols: u32_of(xr.row_elems, "cols")?,
            x_base: xw.base,
            out_base: ow.base,
            eps: p.eps,
            unit_offset: p.unit_offset as u32,
            has_bias: (inputs.len() > 2) as u32,
            _pad: 0,
        };
        dispatches.push(Dispatch {
            pipeline: key.clone(),
            params: bytes(&params),
            bindings: vec![xw.binding, w_binding.clone(), ow.binding, b_binding.clone()],
            groups: groups_2d(if xr.row_elems == 0 { 0 } else { rows as u64 }, l)?,
        });
    }
    Ok(dispatches)
}
