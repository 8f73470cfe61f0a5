//! concat: one invocation per out element (shaders/concat.wgsl), over
//! windows of rows: a row of a, of b and of out are in the same dispatch.

use ferrum_engine::{Result, Tensor};

use super::{Ctx, bytes, u32_of};
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::PipelineKey;
use crate::window::{Rows, groups_2d, ranges};

/// Mirrors `Params` in shaders/concat.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct ConcatParams {
    rows: u32,
    m: u32,
    n: u32,
    a_base: u32,
    b_base: u32,
    out_base: u32,
    _pad: [u32; 2],
}

/// `WG` in the shader.
const WG: usize = 256;

pub(super) fn plan(inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let last = |t: &Tensor| t.shape().last().copied().unwrap_or(1);
    let (m, n) = (last(inputs[0]), last(inputs[1]));
    // as matrices [rows, width]: a row of each is one row of the others
    let rows = out.elem_count() / (m + n).max(1);
    let (a, b, o) = (inputs[0].reshape(&[rows, m])?, inputs[1].reshape(&[rows, n])?, out.reshape(&[rows, m + n])?);
    let l = &ctx.limits;
    let (ar, br, or) = (Rows::of(&a)?, Rows::of(&b)?, Rows::of(&o)?);
    let per = ar.per_window(l)?.min(br.per_window(l)?).min(or.per_window(l)?);
    let key = PipelineKey::new("concat", "main", &[Read, Read, ReadWrite]);
    let mut dispatches = Vec::new();
    for (r0, count) in ranges(rows, per) {
        let (aw, bw, ow) = (ar.window(r0, count, l), br.window(r0, count, l), or.window(r0, count, l));
        let params = ConcatParams {
            rows: u32_of(count, "rows in a window")?,
            m: u32_of(m, "m")?,
            n: u32_of(n, "n")?,
            a_base: aw.base,
            b_base: bw.base,
            out_base: ow.base,
            _pad: [0; 2],
        };
        dispatches.push(Dispatch {
            pipeline: key.clone(),
            params: bytes(&params),
            bindings: vec![aw.binding, bw.binding, ow.binding],
            groups: groups_2d((count * (m + n)).div_ceil(WG) as u64, l)?,
        });
    }
    Ok(dispatches)
}
