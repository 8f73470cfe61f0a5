//! Quantized weights on the GPU (`Backend::upload_quantized`): the codes and
//! the scales of an `engine::quant::QuantizedMatrix` in two device buffers,
//! laid out by `ferrum_engine::quant::device_layout` with code rows padded to
//! 16 bytes (the GEMV loads 16 bytes per lane), and decoded in registers by
//! kernels/cu/quant.cuh (GGUF blocks, kept byte for byte: quant_ggml.cuh):
//! no f32 or bf16 copy of the weight exists anywhere.

use std::any::Any;
use std::sync::Arc;

use cudarc::driver::CudaStream;
use ferrum_engine::quant::QuantizedMatrix;
use ferrum_engine::quant::device_layout::{self, DeviceLayout, DevicePacked};
use ferrum_engine::{Error, Result, Tensor, tensor::Buffer};

use crate::buffer::CudaBuffer;

/// Code rows start at multiples of this many u32 words (16 bytes).
pub(crate) const ALIGN_WORDS: usize = 4;

/// The storage of a quantized CUDA tensor.
pub(crate) struct CudaQuantBuffer {
    pub codes: CudaBuffer,
    pub scales: CudaBuffer,
    pub layout: DeviceLayout,
}

impl Buffer for CudaQuantBuffer {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Uploads `m` as its two buffers.
pub(crate) fn upload(stream: &Arc<CudaStream>, m: &QuantizedMatrix) -> Result<CudaQuantBuffer> {
    let DevicePacked { codes, scales, layout } = device_layout::pack(m, ALIGN_WORDS);
    Ok(CudaQuantBuffer {
        codes: CudaBuffer::with_data(stream, &codes, false)?,
        scales: CudaBuffer::with_data(stream, &scales, false)?,
        layout,
    })
}

/// The quantized storage of `t`, or an error naming the tensor.
pub(crate) fn cuda_quant_buffer(t: &Tensor) -> Result<&CudaQuantBuffer> {
    t.buffer()
        .as_any()
        .downcast_ref::<CudaQuantBuffer>()
        .ok_or_else(|| Error::Backend(format!("{t:?} is not a quantized cuda tensor")))
}
