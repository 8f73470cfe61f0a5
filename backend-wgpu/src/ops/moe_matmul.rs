//! moe_matmul: the `moe` entry of shaders/quant/matmul.wgsl, behind the
//! reader of the stack's dtype (quant/read_float.wgsl for f32, f16 and bf16,
//! the quantized matmul's readers otherwise), so it decodes every weight
//! format as matmul does and shares its gemv body.
//!
//! One dispatch per (token window, weight window). Weight windows hold whole
//! experts, so each (token, choice) row is computed by the one dispatch whose
//! window holds its expert; a stack whose single expert is wider than a
//! binding is refused. Rows are grouped by expert on the device: a workgroup
//! per (4 columns, expert) scans the route for the rows that chose its
//! expert and reads those weight rows once per 8 of them, and scales its
//! results by the expert's scale when there is one. The expert ids are
//! only on the device (planning never reads back), so the shader clamps them
//! into range instead of a host check.

use ferrum_engine::ops::MoeMatmul;
use ferrum_engine::{DType, Error, Result, Tensor};

use super::matmul::QuantMatmulParams;
use super::{Ctx, bytes, u32_of};
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::{Access, PipelineKey};
use crate::quant::{QuantOp, quant_buffer};
use crate::window::{BindLimits, Binding, Rows, ranges, whole};

/// x, codes, scales, bias, out, route, per-expert scale.
const STORAGE: &[Access] = &[Read, Read, Read, Read, ReadWrite, Read, Read];
/// `GEMV_ROWS` in the shader: the columns of one workgroup.
const GEMV_ROWS: usize = 4;

/// Experts `first..first + experts` of the stack, bound for the shader.
struct ExpertWindow {
    first: usize,
    experts: usize,
    codes: Binding,
    scales: Binding,
    w_base: u32,
    s_base: u32,
}

pub(super) fn plan(p: &MoeMatmul, inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let (x, w, route) = (inputs[0], inputs[1], inputs[2]);
    let (bias, scale) = p.optional(inputs);
    let d = p.dims_of(x.shape(), w.shape(), route.shape());
    if d.tokens == 0 || d.n == 0 {
        return Ok(Vec::new());
    }
    let l = &ctx.limits;
    let (key, format, stack) = expert_windows(w, d.n, l)?;
    let x_rows = if d.per_choice { d.top_k } else { 1 }; // x rows per token
    let (xr, or, rr) = (Rows::of(x)?, Rows::of(out)?, Rows::of(route)?);
    let per_t = xr.groups_per_window(x_rows, "a token's rows of x", l)?;
    let per_t = per_t.min(or.groups_per_window(d.top_k, "a token's rows of out", l)?).min(rr.per_window(l)?);
    let bias_binding = bias.map(|b| whole(b, "moe_matmul bias", l)).transpose()?;
    let scale_binding = scale.map(|s| whole(s, "moe_matmul scale", l)).transpose()?;
    let tiles = d.n.div_ceil(GEMV_ROWS);
    let mut dispatches = Vec::new();
    for (t0, tokens) in ranges(d.tokens, per_t) {
        let xw = xr.window(t0 * x_rows, tokens * x_rows, l);
        let ow = or.window(t0 * d.top_k, tokens * d.top_k, l);
        let rw = rr.window(t0, tokens, l);
        for ew in &stack {
            let params = QuantMatmulParams {
                m: u32_of(tokens * d.top_k, "out rows in a window")?,
                k: u32_of(d.k, "k")?,
                n: u32_of(d.n, "n")?,
                n0: u32_of(ew.first * d.n, "first weight row")?,
                nw: u32_of(ew.experts * d.n, "weight rows in a window")?,
                x_base: xw.base,
                w_base: ew.w_base,
                out_base: ow.base,
                has_bias: bias.is_some() as u32,
                s_base: ew.s_base,
                top_k: u32_of(d.top_k, "top_k")?,
                per_choice: d.per_choice as u32,
                route_base: rw.base,
                experts: u32_of(p.experts, "experts")?,
                e0: u32_of(ew.first, "first expert")?,
                has_scale: scale.is_some() as u32,
                ..format
            };
            if tiles.max(ew.experts) > l.max_groups as usize {
                return Err(Error::Backend(format!(
                    "moe_matmul of {} experts x {} columns needs too many workgroups",
                    ew.experts, d.n
                )));
            }
            // without a bias or a scale, x stands in (read-only, never read)
            let b = bias_binding.clone().unwrap_or_else(|| xw.binding.clone());
            let s = scale_binding.clone().unwrap_or_else(|| xw.binding.clone());
            dispatches.push(Dispatch {
                pipeline: key.clone(),
                params: bytes(&params),
                bindings: vec![
                    xw.binding.clone(),
                    ew.codes.clone(),
                    ew.scales.clone(),
                    b,
                    ow.binding.clone(),
                    rw.binding.clone(),
                    s,
                ],
                groups: [tiles as u32, ew.experts as u32, 1],
            });
        }
    }
    Ok(dispatches)
}

/// The pipeline for the stack's dtype, the params fields of its format, and
/// its windows of whole experts of `n` rows.
fn expert_windows(w: &Tensor, n: usize, l: &BindLimits) -> Result<(PipelineKey, QuantMatmulParams, Vec<ExpertWindow>)> {
    let expert = format!("one expert of moe_matmul's w {:?} {}", w.shape(), w.dtype());
    let mut format: QuantMatmulParams = bytemuck::Zeroable::zeroed();
    if w.dtype().is_quantized() {
        let q = quant_buffer(w)?;
        let lay = q.layout;
        format.row_words = u32_of(lay.row_words, "code words per row")?;
        format.srow_words = u32_of(lay.srow_words, "scale words per row")?;
        format.group = u32_of(lay.group, "scale group")?;
        format.spr = u32_of(lay.spr, "scales per row")?;
        format.tensor_scale = lay.tensor_scale;
        format.has_zp = lay.has_zp as u32;
        let key = PipelineKey::new(q.shader(QuantOp::Matmul), "moe", STORAGE).constant("Q_FMT", lay.fmt as u32);
        let windows = q.row_windows_of(w.shape()[0], n, &expert, l)?;
        let stack = windows.into_iter().map(|(cw, sw)| ExpertWindow {
            first: cw.first / n,
            experts: cw.rows / n,
            codes: cw.binding,
            scales: sw.binding,
            w_base: cw.base,
            s_base: sw.base,
        });
        return Ok((key, format, stack.collect()));
    }
    // read_float.wgsl counts a row's start in elements of the dtype
    format.row_words = u32_of(w.shape()[1], "k")?;
    let w_dtype = match w.dtype() {
        DType::F16 => 1,
        DType::BF16 => 2,
        _ => 0,
    };
    let key = PipelineKey::new("moe_matmul", "moe", STORAGE).constant("W_DTYPE", w_dtype);
    let wr = Rows::of(w)?;
    let per = wr.groups_per_window(n, &expert, l)? * n;
    let stack = wr.windows(per, l).into_iter().map(|ww| ExpertWindow {
        first: ww.first / n,
        experts: ww.rows / n,
        // the float reader reads no scales: the weight stands in
        scales: ww.binding.clone(),
        codes: ww.binding,
        w_base: ww.base,
        s_base: 0,
    });
    Ok((key, format, stack.collect()))
}
