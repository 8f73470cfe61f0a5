//! argmax: one workgroup per row, over windows of rows (a row must fit one
//! binding: a vocabulary of logits is well under a megabyte).

use ferrum_engine::{Result, Tensor};

use super::{Ctx, bytes, u32_of};
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::PipelineKey;
use crate::window::{Rows, groups_2d, ranges};

/// Mirrors `Params` in shaders/argmax.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct ArgmaxParams {
    rows: u32,
    cols: u32,
    x_base: u32,
    out_base: u32,
}

pub(super) fn plan(inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let l = &ctx.limits;
    // x (rows, cols) f32; out (rows,) u32: one element per row
    let (xr, or) = (Rows::of(inputs[0])?, Rows::of(out)?);
    let key = PipelineKey::new("argmax", "main", &[Read, ReadWrite]);
    let mut dispatches = Vec::new();
    for (first, rows) in ranges(xr.rows, xr.per_window(l)?.min(or.per_window(l)?)) {
        let (xw, ow) = (xr.window(first, rows, l), or.window(first, rows, l));
        let params = ArgmaxParams {
            rows: u32_of(rows, "rows in a window")?,
            cols: u32_of(xr.row_elems, "cols")?,
            x_base: xw.base,
            out_base: ow.base,
        };
        dispatches.push(Dispatch {
            pipeline: key.clone(),
            params: bytes(&params),
            bindings: vec![xw.binding, ow.binding],
            groups: groups_2d(rows as u64, l)?,
        });
    }
    Ok(dispatches)
}
