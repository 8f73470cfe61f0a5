//! gather_rows: kernels/cu/gather_rows.cu. A float table is widened, a
//! quantized one (every format matmul takes, GGUF blocks included) decoded
//! element by element by the same reader as its matmul, from its two
//! buffers; ids are checked on the host first.

use ferrum_engine::ops::GatherRows;
use ferrum_engine::{DType, Result, Tensor};

use super::matmul::{QuantMatmulParams, quant_suffix};
use super::{BLOCK, Launcher, by_dtype, u32_of};
use crate::buffer::cuda_buffer;
use crate::quant::cuda_quant_buffer;

/// Mirrors `GatherRowsParams` in kernels/cu/gather_rows.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct GatherRowsParams {
    pub n: u32,
    pub cols: u32,
    pub rows: u32,
    pub _pad: u32,
}

// SAFETY: a plain #[repr(C)] struct of u32, laid out as its C twin.
unsafe impl cudarc::driver::DeviceRepr for GatherRowsParams {}

pub(super) fn run(l: &Launcher, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
    let (table, ids) = (inputs[0], inputs[1]);
    let (rows, cols) = (table.shape()[0], table.shape()[1]);
    let ids_buf = cuda_buffer(ids)?;
    let host = ids_buf.host_u32(l.stream)?;
    GatherRows::check_ids(&host, rows)?;
    let (n, c) = (u32_of(host.len(), "ids")?, u32_of(cols, "cols")?);
    // one thread per output element
    let grid = (n, c.div_ceil(BLOCK), 1);
    let o = cuda_buffer(out)?.ptr();
    if let DType::Quant(_) = table.dtype() {
        // a weight [rows, cols] read for `n` ids (gather_rows.cu's QUANT_GATHER)
        let q = cuda_quant_buffer(table)?;
        let p = QuantMatmulParams::new(&q.layout, host.len(), rows, cols, false)?;
        let name = format!("gather_rows_{}", quant_suffix(q.layout.fmt));
        return l.launch(&name, grid, BLOCK, &p, &[q.codes.ptr(), q.scales.ptr(), ids_buf.ptr(), o]);
    }
    let p = GatherRowsParams { n, cols: c, rows: u32_of(rows, "rows")?, _pad: 0 };
    let name = by_dtype(table.dtype(), "gather_rows_f32", "gather_rows_f16", "gather_rows_bf16")?;
    l.launch(name, grid, BLOCK, &p, &[cuda_buffer(table)?.ptr(), ids_buf.ptr(), o])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_struct_has_its_c_size() {
        assert_eq!(std::mem::size_of::<GatherRowsParams>(), 16);
    }
}
