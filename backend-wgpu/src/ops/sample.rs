//! sample: one workgroup per row, over windows of rows as argmax (a row must
//! fit one binding: a vocabulary of logits is well under a megabyte); the
//! temperatures, uniforms and ids are windowed along with the rows.

use ferrum_engine::{Result, Tensor};

use super::{Ctx, bytes, u32_of};
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::PipelineKey;
use crate::window::{Rows, groups_2d, ranges};

/// Mirrors `Params` in shaders/sample.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct SampleParams {
    rows: u32,
    cols: u32,
    x_base: u32,
    t_base: u32,
    u_base: u32,
    out_base: u32,
}

pub(super) fn plan(inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let l = &ctx.limits;
    // x (rows, cols) f32; temperature (rows,) f32; uniform (rows,) f32; out (rows,) u32
    let (xr, tr, ur, or) = (Rows::of(inputs[0])?, Rows::of(inputs[1])?, Rows::of(inputs[2])?, Rows::of(out)?);
    let per = xr.per_window(l)?.min(tr.per_window(l)?).min(ur.per_window(l)?).min(or.per_window(l)?);
    let key = PipelineKey::new("sample", "main", &[Read, Read, Read, ReadWrite]);
    let mut dispatches = Vec::new();
    for (first, rows) in ranges(xr.rows, per) {
        let (xw, tw, uw, ow) = (
            xr.window(first, rows, l),
            tr.window(first, rows, l),
            ur.window(first, rows, l),
            or.window(first, rows, l),
        );
        let params = SampleParams {
            rows: u32_of(rows, "rows in a window")?,
            cols: u32_of(xr.row_elems, "cols")?,
            x_base: xw.base,
            t_base: tw.base,
            u_base: uw.base,
            out_base: ow.base,
        };
        dispatches.push(Dispatch {
            pipeline: key.clone(),
            params: bytes(&params),
            bindings: vec![xw.binding, tw.binding, uw.binding, ow.binding],
            groups: groups_2d(rows as u64, l)?,
        });
    }
    Ok(dispatches)
}
