//! matmul: `gemv` when a window has at most 8 rows of x (decode), `tiled`
//! otherwise; one dispatch per (x/out row window, weight row window).

use ferrum_engine::{Result, Tensor};

use super::{Ctx, bytes, u32_of, weight_pipeline};
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::window::{Rows, groups_2d, ranges, whole};
use ferrum_engine::Error;

/// Mirrors `Params` in shaders/matmul.wgsl (and shaders/f16/matmul.wgsl).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct MatmulParams {
    m: u32,
    k: u32,
    n: u32,
    n0: u32,
    nw: u32,
    x_base: u32,
    w_base: u32,
    out_base: u32,
    has_bias: u32,
    _pad: [u32; 3],
}

/// `GEMV_M` in the shader: rows of x one gemv workgroup handles.
const GEMV_M: usize = 8;
/// `GEMV_ROWS` in the shader: weight rows per gemv workgroup.
const GEMV_ROWS: usize = 4;
/// Out elements per `tiled` workgroup side: 8 invocations x 4.
const TILED_SIDE: usize = 32;

pub(super) fn plan(inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let (x, w, bias) = (inputs[0], inputs[1], inputs.get(2));
    let (m, k, n) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    let l = &ctx.limits;
    let (xr, wr, or) = (Rows::of(x)?, Rows::of(w)?, Rows::of(out)?);
    let per_m = xr.per_window(l)?.min(or.per_window(l)?);
    let w_windows = wr.windows(wr.per_window(l)?, l);
    let bias_binding = bias.map(|b| whole(b, "matmul bias", l)).transpose()?;
    let mut dispatches = Vec::new();
    for (first, rows) in ranges(m, per_m) {
        let (xw, ow) = (xr.window(first, rows, l), or.window(first, rows, l));
        let gemv = rows <= GEMV_M;
        let entry = if gemv { "gemv" } else { "tiled" };
        let key = weight_pipeline("matmul", entry, &[Read, Read, Read, ReadWrite], w.dtype(), ctx);
        for ww in &w_windows {
            let params = MatmulParams {
                m: u32_of(rows, "x rows in a window")?,
                k: u32_of(k, "k")?,
                n: u32_of(n, "n")?,
                n0: u32_of(ww.first, "first weight row")?,
                nw: u32_of(ww.rows, "weight rows in a window")?,
                x_base: xw.base,
                w_base: ww.base,
                out_base: ow.base,
                has_bias: bias.is_some() as u32,
                _pad: [0; 3],
            };
            let groups = if gemv {
                groups_2d(ww.rows.div_ceil(GEMV_ROWS) as u64, l)?
            } else {
                let (gx, gy) = (ww.rows.div_ceil(TILED_SIDE), rows.div_ceil(TILED_SIDE));
                if gx.max(gy) > l.max_groups as usize {
                    return Err(Error::Backend(format!("matmul of {rows} x {} needs too many workgroups", ww.rows)));
                }
                [gx as u32, gy as u32, 1]
            };
            // without a bias, x stands in for it (read-only, never read)
            let b = bias_binding.clone().unwrap_or_else(|| xw.binding.clone());
            dispatches.push(Dispatch {
                pipeline: key.clone(),
                params: bytes(&params),
                bindings: vec![xw.binding.clone(), ww.binding.clone(), b, ow.binding.clone()],
                groups,
            });
        }
    }
    Ok(dispatches)
}
