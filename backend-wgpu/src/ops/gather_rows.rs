//! gather_rows: one invocation per output element, for each (out window,
//! table window) pair that some id of the out window falls in: a decode
//! step's embedding lookup touches one window of even a huge table.
//! Quantized tables run shaders/quant/gather_rows.wgsl behind their family's
//! reader, codes and scales windowed by the same table rows.

use ferrum_engine::ops::GatherRows;
use ferrum_engine::{Result, Tensor};

use super::{Ctx, bytes, u32_of, weight_pipeline};
use crate::buffer::gpu_buffer;
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::pipelines::PipelineKey;
use crate::quant::{QuantOp, quant_buffer};
use crate::window::{Rows, Window, groups_2d, whole};

/// Mirrors `Params` in shaders/gather_rows.wgsl (and shaders/f16/gather_rows.wgsl).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct GatherRowsParams {
    n: u32,
    cols: u32,
    id0: u32,
    out_base: u32,
    row0: u32,
    rows: u32,
    table_base: u32,
    _pad: u32,
}

/// Mirrors `Params` in shaders/quant/gather_rows.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct QuantGatherRowsParams {
    n: u32,
    cols: u32,
    id0: u32,
    out_base: u32,
    row0: u32,
    rows: u32,
    c_base: u32,
    s_base: u32,
    row_words: u32,
    srow_words: u32,
    group: u32,
    spr: u32,
    tensor_scale: f32,
    has_zp: u32,
    _pad: [u32; 2],
}

const WG: u64 = 256;

pub(super) fn plan(inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let (table, ids) = (inputs[0], inputs[1]);
    let (rows, cols) = (table.shape()[0], table.shape()[1]);
    let id_host = gpu_buffer(ids)?.host_u32()?;
    GatherRows::check_ids(&id_host, rows)?;
    if table.dtype().is_quantized() {
        return plan_quant(table, ids, &id_host, out, ctx);
    }
    let l = &ctx.limits;
    let (t, o) = (Rows::of(table)?, Rows::of(out)?);
    let ids_binding = whole(ids, "gather_rows ids", l)?;
    let key = weight_pipeline("gather_rows", "main", &[Read, Read, ReadWrite], table.dtype(), ctx);
    let table_windows = t.windows(t.per_window(l)?, l);
    let mut dispatches = Vec::new();
    for ow in o.windows(o.per_window(l)?, l) {
        let wanted = &id_host[ow.first..ow.first + ow.rows];
        for tw in &table_windows {
            if !any_in(wanted, tw) {
                continue;
            }
            let params = GatherRowsParams {
                n: u32_of(ow.rows, "ids in a window")?,
                cols: u32_of(cols, "cols")?,
                id0: u32_of(ow.first, "first id")?,
                out_base: ow.base,
                row0: u32_of(tw.first, "first table row")?,
                rows: u32_of(tw.rows, "table rows in a window")?,
                table_base: tw.base,
                _pad: 0,
            };
            dispatches.push(Dispatch {
                pipeline: key.clone(),
                params: bytes(&params),
                bindings: vec![tw.binding.clone(), ids_binding.clone(), ow.binding.clone()],
                groups: groups_2d(((ow.rows * cols) as u64).div_ceil(WG), l)?,
            });
        }
    }
    Ok(dispatches)
}

/// Whether some id of `wanted` falls in table window `tw`.
fn any_in(wanted: &[u32], tw: &Window) -> bool {
    wanted.iter().any(|&id| (tw.first..tw.first + tw.rows).contains(&(id as usize)))
}

/// A quantized table: its codes and scales bound through windows of the same
/// table rows (see `crate::quant` for the layout).
fn plan_quant(table: &Tensor, ids: &Tensor, id_host: &[u32], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let (rows, cols) = (table.shape()[0], table.shape()[1]);
    let l = &ctx.limits;
    let q = quant_buffer(table)?;
    let lay = q.layout;
    let o = Rows::of(out)?;
    let ids_binding = whole(ids, "gather_rows ids", l)?;
    let key = PipelineKey::new(q.shader(QuantOp::GatherRows), "main", &[Read, Read, Read, ReadWrite])
        .constant("Q_FMT", lay.fmt as u32);
    let table_windows = q.row_windows(rows, l)?;
    let mut dispatches = Vec::new();
    for ow in o.windows(o.per_window(l)?, l) {
        let wanted = &id_host[ow.first..ow.first + ow.rows];
        for (cw, sw) in table_windows.iter().filter(|(cw, _)| any_in(wanted, cw)) {
            let params = QuantGatherRowsParams {
                n: u32_of(ow.rows, "ids in a window")?,
                cols: u32_of(cols, "cols")?,
                id0: u32_of(ow.first, "first id")?,
                out_base: ow.base,
                row0: u32_of(cw.first, "first table row")?,
                rows: u32_of(cw.rows, "table rows in a window")?,
                c_base: cw.base,
                s_base: sw.base,
                row_words: u32_of(lay.row_words, "code words per row")?,
                srow_words: u32_of(lay.srow_words, "scale words per row")?,
                group: u32_of(lay.group, "scale group")?,
                spr: u32_of(lay.spr, "scales per row")?,
                tensor_scale: lay.tensor_scale,
                has_zp: lay.has_zp as u32,
                _pad: [0; 2],
            };
            dispatches.push(Dispatch {
                pipeline: key.clone(),
                params: bytes(&params),
                bindings: vec![cw.binding.clone(), sw.binding.clone(), ids_binding.clone(), ow.binding.clone()],
                groups: groups_2d(((ow.rows * cols) as u64).div_ceil(WG), l)?,
            });
        }
    }
    Ok(dispatches)
}
