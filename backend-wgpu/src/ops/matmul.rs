//! matmul: `gemv` when a window has at most 8 rows of x (decode), `tiled`
//! otherwise; one dispatch per (x/out row window, weight row window).
//! Quantized weights run shaders/quant/matmul.wgsl behind their family's
//! reader (same entry points and grid), their codes and scales windowed by
//! the same weight rows.

use ferrum_engine::{Result, Tensor};

use super::{Ctx, bytes, u32_of, weight_pipeline};
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::PipelineKey;
use crate::quant::{QuantOp, quant_buffer};
use crate::window::{BindLimits, Rows, groups_2d, ranges, whole};
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

/// Mirrors `Params` in shaders/quant/matmul.wgsl (also moe_matmul's, whose
/// `moe` entry is in that body: see `super::moe_matmul`).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct QuantMatmulParams {
    pub m: u32,
    pub k: u32,
    pub n: u32,
    pub n0: u32,
    pub nw: u32,
    pub x_base: u32,
    pub w_base: u32,
    pub out_base: u32,
    pub has_bias: u32,
    pub s_base: u32,
    pub row_words: u32,
    pub srow_words: u32,
    pub group: u32,
    pub spr: u32,
    pub tensor_scale: f32,
    pub has_zp: u32,
    // the `moe` entry only
    pub top_k: u32,
    pub per_choice: u32,
    pub route_base: u32,
    pub experts: u32,
    pub e0: u32,
    pub has_scale: u32,
    pub _pad: [u32; 2],
}

/// `GEMV_M` in the shader: rows of x one gemv workgroup handles.
const GEMV_M: usize = 8;
/// `GEMV_ROWS` in the shader: weight rows per gemv workgroup.
const GEMV_ROWS: usize = 4;
/// Out elements per `tiled` workgroup side: 8 invocations x 4.
const TILED_SIDE: usize = 32;

pub(super) fn plan(inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let (x, w, bias) = (inputs[0], inputs[1], inputs.get(2));
    if w.dtype().is_quantized() {
        return plan_quant(inputs, out, ctx);
    }
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
            let groups = workgroups(gemv, rows, ww.rows, l)?;
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

/// The grid for `rows` x `weight_rows` outputs: GEMV_ROWS weight rows per
/// workgroup (2D past the per-dimension limit), or TILED_SIDE² tiles.
fn workgroups(gemv: bool, rows: usize, weight_rows: usize, l: &BindLimits) -> Result<[u32; 3]> {
    if gemv {
        return groups_2d(weight_rows.div_ceil(GEMV_ROWS) as u64, l);
    }
    let (gx, gy) = (weight_rows.div_ceil(TILED_SIDE), rows.div_ceil(TILED_SIDE));
    if gx.max(gy) > l.max_groups as usize {
        return Err(Error::Backend(format!("matmul of {rows} x {weight_rows} needs too many workgroups")));
    }
    Ok([gx as u32, gy as u32, 1])
}

/// A quantized weight: its codes and scales bound through windows of the
/// same weight rows (see `crate::quant` for the layout).
fn plan_quant(inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let (x, w, bias) = (inputs[0], inputs[1], inputs.get(2));
    let (m, k, n) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    let l = &ctx.limits;
    let q = quant_buffer(w)?;
    let lay = q.layout;
    let (xr, or) = (Rows::of(x)?, Rows::of(out)?);
    let per_m = xr.per_window(l)?.min(or.per_window(l)?);
    let w_windows = q.row_windows(n, l)?;
    let bias_binding = bias.map(|b| whole(b, "matmul bias", l)).transpose()?;
    let storage = &[Read, Read, Read, Read, ReadWrite];
    let mut dispatches = Vec::new();
    for (first, rows) in ranges(m, per_m) {
        let (xw, ow) = (xr.window(first, rows, l), or.window(first, rows, l));
        let gemv = rows <= GEMV_M;
        let entry = if gemv { "gemv" } else { "tiled" };
        let key = PipelineKey::new(q.shader(QuantOp::Matmul), entry, storage).constant("Q_FMT", lay.fmt as u32);
        for (cw, sw) in &w_windows {
            let params = QuantMatmulParams {
                m: u32_of(rows, "x rows in a window")?,
                k: u32_of(k, "k")?,
                n: u32_of(n, "n")?,
                n0: u32_of(cw.first, "first weight row")?,
                nw: u32_of(cw.rows, "weight rows in a window")?,
                x_base: xw.base,
                w_base: cw.base,
                out_base: ow.base,
                has_bias: bias.is_some() as u32,
                s_base: sw.base,
                row_words: u32_of(lay.row_words, "code words per row")?,
                srow_words: u32_of(lay.srow_words, "scale words per row")?,
                group: u32_of(lay.group, "scale group")?,
                spr: u32_of(lay.spr, "scales per row")?,
                tensor_scale: lay.tensor_scale,
                has_zp: lay.has_zp as u32,
                ..bytemuck::Zeroable::zeroed()
            };
            let groups = workgroups(gemv, rows, cw.rows, l)?;
            let b = bias_binding.clone().unwrap_or_else(|| xw.binding.clone());
            dispatches.push(Dispatch {
                pipeline: key.clone(),
                params: bytes(&params),
                bindings: vec![xw.binding.clone(), cw.binding.clone(), sw.binding.clone(), b, ow.binding.clone()],
                groups,
            });
        }
    }
    Ok(dispatches)
}
