//! Quantized weights on the GPU (`Backend::upload_quantized`): the packed
//! codes and the scales of an `engine::quant::QuantizedMatrix` in two buffers,
//! read by the shaders in `shaders/quant/` (matmul, gather_rows), which decode
//! each element in registers (no f32 copy of the weight exists anywhere).
//! Formats with separate scales use the `quant/` variants, GGUF block formats
//! (scales inside the blocks) the `ggml/` ones: one body per op, one reader
//! per family.
//!
//! The layout (codes padded to whole words, `align_words` = 1) is
//! `ferrum_engine::quant::device_layout`'s, shared with the CUDA backend.
//! Only the division of compressed-tensors' NVFP4 may differ from the CPU by
//! an ulp (WGSL's `/` is not correctly rounded everywhere), an E8M0 scale of
//! 2^-127 is an f32 subnormal that some devices flush, and a device may fuse
//! a GGUF decoder's `dl * q - ml` into one rounding.

use std::any::Any;
use std::sync::Arc;

use ferrum_engine::quant::QuantizedMatrix;
use ferrum_engine::quant::device_layout::{self, DeviceLayout, DevicePacked};
use ferrum_engine::{Error, Result, Tensor, tensor::Buffer};

use crate::buffer::{BufferPool, GpuBuffer};
use crate::window::{BindLimits, Rows, Window, ranges};

/// The storage of a quantized wgpu tensor.
pub(crate) struct QuantBuffer {
    pub codes: GpuBuffer,
    pub scales: GpuBuffer,
    pub layout: DeviceLayout,
}

/// The ops with quantized variants (`ferrum_shaders::QUANT_SHADERS`, `GGML_SHADERS`).
#[derive(Clone, Copy)]
pub(crate) enum QuantOp {
    Matmul,
    GatherRows,
}

impl QuantBuffer {
    /// The pipeline shader of `op` for this buffer's format family.
    pub fn shader(&self, op: QuantOp) -> &'static str {
        match (op, self.layout.fmt.is_ggml()) {
            (QuantOp::Matmul, false) => "quant/matmul",
            (QuantOp::Matmul, true) => "ggml/matmul",
            (QuantOp::GatherRows, false) => "quant/gather_rows",
            (QuantOp::GatherRows, true) => "ggml/gather_rows",
        }
    }

    /// Windows over the codes and over the scales of the same `rows` weight
    /// rows, each pair covering whole rows of both.
    pub fn row_windows(&self, rows: usize, l: &BindLimits) -> Result<Vec<(Window, Window)>> {
        self.row_windows_of(rows, 1, "a weight row", l)
    }

    /// [`QuantBuffer::row_windows`] holding whole groups of `unit` rows
    /// (`what`: the experts of a stacked weight).
    pub fn row_windows_of(
        &self,
        rows: usize,
        unit: usize,
        what: &str,
        l: &BindLimits,
    ) -> Result<Vec<(Window, Window)>> {
        let lay = &self.layout;
        let cr = Rows { buf: &self.codes, rows, row_elems: lay.row_words, elem_bytes: 4 };
        let sr = Rows { buf: &self.scales, rows, row_elems: lay.srow_words, elem_bytes: 4 };
        let per = cr.groups_per_window(unit, what, l)?.min(sr.groups_per_window(unit, what, l)?) * unit;
        Ok(ranges(rows, per).map(|(first, n)| (cr.window(first, n, l), sr.window(first, n, l))).collect())
    }
}

impl Buffer for QuantBuffer {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The quantized storage of `t`, or an error naming the tensor.
pub(crate) fn quant_buffer(t: &Tensor) -> Result<&QuantBuffer> {
    t.buffer()
        .as_any()
        .downcast_ref::<QuantBuffer>()
        .ok_or_else(|| Error::Backend(format!("{t:?} is not a quantized wgpu tensor")))
}

/// Uploads `m` as two buffers (codes, scales), each within `max_buffer_size`.
pub(crate) fn upload(
    device: &wgpu::Device,
    pool: &Arc<BufferPool>,
    max_buffer_size: u64,
    m: &QuantizedMatrix,
) -> Result<QuantBuffer> {
    let DevicePacked { codes, scales, layout } = device_layout::pack(m, 1);
    for (what, b) in [("codes", &codes), ("scales", &scales)] {
        if b.len() as u64 > max_buffer_size {
            return Err(Error::Backend(format!(
                "{} [{}, {}] {what}: {} bytes, more than the adapter's max_buffer_size ({max_buffer_size})",
                m.format(),
                m.rows(),
                m.cols(),
                b.len()
            )));
        }
    }
    Ok(QuantBuffer {
        codes: GpuBuffer::with_data(device, pool, &codes, false)?,
        scales: GpuBuffer::with_data(device, pool, &scales, false)?,
        layout,
    })
}
