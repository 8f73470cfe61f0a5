//! Quantized weights on the GPU (`Backend::upload_quantized`): the packed
//! codes and the scales of an `engine::quant::QuantizedMatrix` in two buffers,
//! read by `shaders/quant/matmul.wgsl`, which decodes each element in
//! registers (no f32 copy of the weight exists anywhere).
//!
//! Layout, per weight row r of a [N, K] matrix (row-major, as stored):
//!
//! - **codes**: the row's packed bytes exactly as the format stores them
//!   (4-bit: element 2j in the low nibble of byte j; 8-bit: one byte per
//!   element), padded to whole u32 words; row r starts at word
//!   `r * row_words`. Read as little-endian words, element i of a 4-bit row is
//!   bits `4 (i % 8)` of word `i / 8`, of an 8-bit row bits `8 (i % 4)` of
//!   word `i / 4`.
//! - **scales**: `spr` scales per row, element i using scale `i / group`;
//!   row r starts at word `r * srow_words`. NVFP4 (E4M3) and MXFP4 (E8M0)
//!   scale bytes stay raw, four per word; FP8, INT8 and INT4 scales are f32
//!   words. INT4 with zero points appends the row's i8 zero points, four per
//!   word, after its scales. FP8 per-tensor and per-channel scales become one
//!   scale per row (group = K); FP8 2-D block scales are repeated for every
//!   row of their block row (group = the block's columns), so every format
//!   windows by weight rows alike.
//! - NVFP4's tensor scale (`weight_scale_2` or `weight_global_scale`) goes in
//!   the matmul params, with the convention in `Q_FMT`.
//!
//! Decoding is operation for operation the CPU reference's
//! (`dequantize_row_into`): E2M1 x (E4M3 x s2), E2M1 x (E4M3 / g), E2M1 x
//! 2^(e-127), E4M3 x s, i8 x s, (q - zp) x s; only the division of
//! compressed-tensors' NVFP4 may differ by an ulp (WGSL's `/` is not
//! correctly rounded everywhere), and an E8M0 scale of 2^-127 is an f32
//! subnormal that some devices flush.

use std::any::Any;
use std::sync::Arc;

use ferrum_engine::quant::{Fp8Scaling, Nvfp4Convention, QuantizedMatrix};
use ferrum_engine::{Error, Result, Tensor, tensor::Buffer};

use crate::buffer::{BufferPool, GpuBuffer};

/// `Q_FMT` in shaders/quant/matmul.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum QFmt {
    Nvfp4ModelOpt = 0,
    Nvfp4Ct = 1,
    Mxfp4 = 2,
    Fp8 = 3,
    Int8 = 4,
    Int4 = 5,
}

/// How a quantized weight lies in its two buffers (see the module doc).
#[derive(Clone, Copy, Debug)]
pub(crate) struct QuantLayout {
    pub fmt: QFmt,
    /// Code words per weight row.
    pub row_words: usize,
    /// Scale (and zero-point) words per weight row.
    pub srow_words: usize,
    /// Elements per scale.
    pub group: usize,
    /// Scales per row.
    pub spr: usize,
    pub tensor_scale: f32,
    pub has_zp: bool,
}

/// The storage of a quantized wgpu tensor.
pub(crate) struct QuantBuffer {
    pub codes: GpuBuffer,
    pub scales: GpuBuffer,
    pub layout: QuantLayout,
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

/// Rows of `row_bytes`-byte chunks of `data`, each padded to whole words.
fn padded_rows<'a>(rows: impl Iterator<Item = &'a [u8]>, row_words: usize, out: &mut Vec<u8>) {
    for row in rows {
        let start = out.len();
        out.extend_from_slice(row);
        out.resize(start + row_words * 4, 0);
    }
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// The host bytes of the codes and scales buffers, and their layout.
pub(crate) fn pack(m: &QuantizedMatrix) -> (Vec<u8>, Vec<u8>, QuantLayout) {
    let (n, k) = (m.rows(), m.cols());
    let (mut codes, mut scales) = (Vec::new(), Vec::new());
    let layout = match m {
        QuantizedMatrix::Nvfp4(q) => {
            let fmt = match q.convention() {
                Nvfp4Convention::ModelOpt => QFmt::Nvfp4ModelOpt,
                Nvfp4Convention::CompressedTensors => QFmt::Nvfp4Ct,
            };
            byte_scaled(q.packed(), q.scales(), n, k, 16, fmt, q.tensor_scale(), &mut codes, &mut scales)
        }
        QuantizedMatrix::Mxfp4(q) => {
            byte_scaled(q.packed(), q.scales(), n, k, 32, QFmt::Mxfp4, 1.0, &mut codes, &mut scales)
        }
        QuantizedMatrix::Fp8(q) => {
            let row_words = k.div_ceil(4);
            padded_rows(q.data().chunks_exact(k), row_words, &mut codes);
            let (group, spr) = match q.scaling() {
                Fp8Scaling::PerTensor | Fp8Scaling::PerChannel => (k, 1),
                Fp8Scaling::Block { cols, .. } => (cols, k.div_ceil(cols)),
            };
            for r in 0..n {
                match q.scaling() {
                    Fp8Scaling::PerTensor => scales.extend_from_slice(f32_bytes(&q.scales()[..1])),
                    Fp8Scaling::PerChannel => scales.extend_from_slice(f32_bytes(&q.scales()[r..r + 1])),
                    Fp8Scaling::Block { rows, .. } => {
                        scales.extend_from_slice(f32_bytes(&q.scales()[(r / rows) * spr..(r / rows + 1) * spr]))
                    }
                }
            }
            QuantLayout { fmt: QFmt::Fp8, row_words, srow_words: spr, group, spr, tensor_scale: 1.0, has_zp: false }
        }
        QuantizedMatrix::Int8(q) => {
            let row_words = k.div_ceil(4);
            padded_rows(bytemuck::cast_slice::<i8, u8>(q.data()).chunks_exact(k), row_words, &mut codes);
            scales.extend_from_slice(f32_bytes(q.scales()));
            QuantLayout {
                fmt: QFmt::Int8,
                row_words,
                srow_words: 1,
                group: k,
                spr: 1,
                tensor_scale: 1.0,
                has_zp: false,
            }
        }
        QuantizedMatrix::Int4(q) => {
            let row_words = (k / 2).div_ceil(4);
            padded_rows(q.packed().chunks_exact(k / 2), row_words, &mut codes);
            let (group, spr) = (q.group(), k / q.group());
            let zp_words = if q.is_symmetric() { 0 } else { spr.div_ceil(4) };
            for r in 0..n {
                scales.extend_from_slice(f32_bytes(&q.scales()[r * spr..(r + 1) * spr]));
                if let Some(z) = q.zero_points() {
                    padded_rows(
                        std::iter::once(bytemuck::cast_slice::<i8, u8>(&z[r * spr..(r + 1) * spr])),
                        zp_words,
                        &mut scales,
                    );
                }
            }
            QuantLayout {
                fmt: QFmt::Int4,
                row_words,
                srow_words: spr + zp_words,
                group,
                spr,
                tensor_scale: 1.0,
                has_zp: !q.is_symmetric(),
            }
        }
    };
    (codes, scales, layout)
}

/// FP4 codes with one scale byte per `group` (NVFP4, MXFP4).
#[allow(clippy::too_many_arguments)]
fn byte_scaled(
    packed: &[u8],
    scale_bytes: &[u8],
    n: usize,
    k: usize,
    group: usize,
    fmt: QFmt,
    tensor_scale: f32,
    codes: &mut Vec<u8>,
    scales: &mut Vec<u8>,
) -> QuantLayout {
    let row_words = (k / 2).div_ceil(4);
    padded_rows(packed.chunks_exact(k / 2), row_words, codes);
    let spr = k / group;
    let srow_words = spr.div_ceil(4);
    padded_rows(scale_bytes.chunks_exact(spr).take(n), srow_words, scales);
    QuantLayout { fmt, row_words, srow_words, group, spr, tensor_scale, has_zp: false }
}

/// Uploads `m` as two buffers (codes, scales), each within `max_buffer_size`.
pub(crate) fn upload(
    device: &wgpu::Device,
    pool: &Arc<BufferPool>,
    max_buffer_size: u64,
    m: &QuantizedMatrix,
) -> Result<QuantBuffer> {
    let (codes, scales, layout) = pack(m);
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
