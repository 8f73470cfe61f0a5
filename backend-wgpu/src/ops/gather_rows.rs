//! gather_rows: one invocation per output element, for each (out window,
//! table window) pair that some id of the out window falls in: a decode
//! step's embedding lookup touches one window of even a huge table.

use ferrum_engine::ops::GatherRows;
use ferrum_engine::{Result, Tensor};

use super::{Ctx, bytes, u32_of, weight_pipeline};
use crate::buffer::gpu_buffer;
use crate::encoder::Dispatch;
use crate::pipelines::Access::{Read, ReadWrite};
use crate::window::{Rows, groups_2d, whole};

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

const WG: u64 = 256;

pub(super) fn plan(inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let (table, ids) = (inputs[0], inputs[1]);
    let (rows, cols) = (table.shape()[0], table.shape()[1]);
    let id_host = gpu_buffer(ids)?.host_u32()?;
    GatherRows::check_ids(&id_host, rows)?;
    let l = &ctx.limits;
    let (t, o) = (Rows::of(table)?, Rows::of(out)?);
    let ids_binding = whole(ids, "gather_rows ids", l)?;
    let key = weight_pipeline("gather_rows", "main", &[Read, Read, ReadWrite], table.dtype(), ctx);
    let table_windows = t.windows(t.per_window(l)?, l);
    let mut dispatches = Vec::new();
    for ow in o.windows(o.per_window(l)?, l) {
        let wanted = &id_host[ow.first..ow.first + ow.rows];
        for tw in &table_windows {
            let in_window = |id: &u32| (tw.first..tw.first + tw.rows).contains(&(*id as usize));
            if !wanted.iter().any(in_window) {
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
