//! NVFP4: E2M1 codes in blocks of 16 along a row, one FP8 E4M3 scale per
//! block, one f32 scale per tensor. Two producers, two conventions for the
//! tensor scale:
//!
//! ```text
//! weight / weight_packed  u8   [N, K/2]   E2M1 codes, element 2j low nibble of byte j
//! weight_scale            e4m3 [N, K/16]  block scale s_b
//! ModelOpt:          weight_scale_2       f32 []   s2 = amax(W) / (6 * 448)
//!                    value = E2M1[code] * (f32(s_b) * s2)
//! compressed-tensors: weight_global_scale f32 [1]  g = 6 * 448 / amax(W)
//!                    value = E2M1[code] * (f32(s_b) / g)
//! ```
//!
//! Quantizers, operation for operation in f32 (bit-exact with the tools for
//! f32 weights, checked by `tests/quant_formats.rs`):
//!
//! - **ModelOpt** (`NVFP4QTensor.quantize`, what `export_hf_checkpoint` calls):
//!   `s2 = amax / 2688`; `s_b = amax_b / (6 * s2)`; `s_b == 0 -> 1.0`; `s_b`
//!   clamped to `[2^-9, 448]` then cast to E4M3; `code = E2M1(w / (f32(s_b) * s2))`.
//! - **compressed-tensors** (`generate_gparam`, `calculate_qparams`,
//!   `NVFP4PackedCompressor.compress`; what llm-compressor's `nvfp4-pack-quantized`
//!   writes): `g = (1 / max(amax, f32::MIN_POSITIVE)) * 2688` (torch computes
//!   a scalar divided by a tensor this way; Inf/NaN -> 1);
//!   `s_b = (amax_b / 6) * g` clamped to ±448 and cast to E4M3; an E4M3 zero
//!   becomes 0.125 (its `eps`, not 1.0); `code = E2M1(w / (f32(s_b) / g))`.
//!
//! E2M1 rounding (RNE, saturate at 6, small negatives -> code 8) is the same
//! in both; see [`super::e2m1`]. An all-zero matrix gets ModelOpt `s2 = 0`
//! (ModelOpt itself would divide 0 by 0 there), block scales 1.0, codes 0.

use super::{QuantMatrix, check_finite, check_matrix, check_row, check_shape, e2m1, fp8};
use crate::error::{Error, Result};

/// Which tool's tensor-scale convention the matrix uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Nvfp4Convention {
    /// NVIDIA ModelOpt (`quant_method: "modelopt"`, `quant_algo: "NVFP4"`):
    /// `weight_scale_2` multiplies.
    ModelOpt,
    /// compressed-tensors `nvfp4-pack-quantized`: `weight_global_scale` divides.
    CompressedTensors,
}

/// An NVFP4 matrix [rows, cols] (see the module doc for the layout).
#[derive(Clone, Debug, PartialEq)]
pub struct Nvfp4 {
    rows: usize,
    cols: usize,
    convention: Nvfp4Convention,
    packed: Vec<u8>,
    scales: Vec<u8>,
    tensor_scale: f32,
}

const OP: &str = "nvfp4";

impl Nvfp4 {
    /// Elements per block scale.
    pub const BLOCK: usize = 16;

    /// Quantizes row-major f32 weights `w` [rows, cols] the way `convention`'s
    /// tool does. `cols` must be a multiple of 16; `w` must be finite.
    pub fn quantize(convention: Nvfp4Convention, w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        check_matrix(OP, w.len(), rows, cols, Self::BLOCK)?;
        check_finite(OP, w)?;
        let amax = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let blocks = cols / Self::BLOCK;
        let mut scales = vec![0u8; rows * blocks];
        let mut codes = vec![0u8; rows * cols];
        let tensor_scale = match convention {
            Nvfp4Convention::ModelOpt => amax / 2688.0,
            Nvfp4Convention::CompressedTensors => {
                // `2688 / t` in torch is `reciprocal(t) * 2688`: two roundings.
                let g = (1.0 / amax.max(f32::MIN_POSITIVE)) * 2688.0;
                if g.is_finite() { g } else { 1.0 }
            }
        };
        for (b, (wb, cb)) in w.chunks_exact(Self::BLOCK).zip(codes.chunks_exact_mut(Self::BLOCK)).enumerate() {
            let bamax = wb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let (scale_code, divisor) = match convention {
                Nvfp4Convention::ModelOpt => {
                    let s2 = tensor_scale;
                    if s2 == 0.0 {
                        scales[b] = fp8::encode(1.0);
                        continue; // codes stay 0
                    }
                    let mut s = bamax / (6.0 * s2);
                    if s == 0.0 {
                        s = 1.0;
                    }
                    let code = fp8::encode(s.clamp(1.0 / 512.0, fp8::E4M3_MAX));
                    (code, fp8::decode(code) * s2)
                }
                Nvfp4Convention::CompressedTensors => {
                    let g = tensor_scale;
                    let mut code = fp8::encode_saturating((bamax / 6.0) * g);
                    if fp8::decode(code) == 0.0 {
                        code = fp8::encode(0.125);
                    }
                    (code, fp8::decode(code) / g)
                }
            };
            scales[b] = scale_code;
            for (c, &v) in cb.iter_mut().zip(wb) {
                *c = e2m1::encode(v / divisor);
            }
        }
        let mut packed = vec![0u8; rows * cols / 2];
        e2m1::pack_into(&codes, &mut packed);
        Ok(Nvfp4 { rows, cols, convention, packed, scales, tensor_scale })
    }

    /// A matrix from stored tensors: `packed` u8 [rows, cols/2], `scales` E4M3
    /// bytes [rows, cols/16], and the tensor scale in `convention`'s meaning
    /// (`weight_scale_2` or `weight_global_scale`).
    pub fn from_parts(
        convention: Nvfp4Convention,
        rows: usize,
        cols: usize,
        packed: Vec<u8>,
        scales: Vec<u8>,
        tensor_scale: f32,
    ) -> Result<Self> {
        check_shape(OP, rows, cols, Self::BLOCK)?;
        if packed.len() != rows * cols / 2 {
            return Err(Error::op(
                OP,
                format!("packed codes: {} bytes, [{rows}, {cols}] needs {}", packed.len(), rows * cols / 2),
            ));
        }
        if scales.len() != rows * cols / Self::BLOCK {
            return Err(Error::op(
                OP,
                format!("block scales: {}, [{rows}, {cols}] needs {}", scales.len(), rows * cols / 16),
            ));
        }
        let ok = match convention {
            Nvfp4Convention::ModelOpt => tensor_scale.is_finite() && tensor_scale >= 0.0,
            Nvfp4Convention::CompressedTensors => tensor_scale.is_finite() && tensor_scale > 0.0,
        };
        if !ok {
            return Err(Error::op(OP, format!("tensor scale {tensor_scale} is not valid for {convention:?}")));
        }
        Ok(Nvfp4 { rows, cols, convention, packed, scales, tensor_scale })
    }

    pub fn convention(&self) -> Nvfp4Convention {
        self.convention
    }

    /// The packed codes, u8 [rows, cols/2].
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// The block scales as E4M3 bytes, [rows, cols/16].
    pub fn scales(&self) -> &[u8] {
        &self.scales
    }

    /// ModelOpt's `weight_scale_2` or compressed-tensors' `weight_global_scale`.
    pub fn tensor_scale(&self) -> f32 {
        self.tensor_scale
    }

    /// The factor block `b` (row-major over [rows, cols / 16]) multiplies its E2M1 values by.
    pub fn block_factor(&self, b: usize) -> f32 {
        let s = fp8::decode(self.scales[b]);
        match self.convention {
            Nvfp4Convention::ModelOpt => s * self.tensor_scale,
            Nvfp4Convention::CompressedTensors => s / self.tensor_scale,
        }
    }
}

impl QuantMatrix for Nvfp4 {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn storage_bytes(&self) -> usize {
        self.packed.len() + self.scales.len() + 4
    }

    fn dequantize_row_into(&self, row: usize, out: &mut [f32]) -> Result<()> {
        check_row(OP, row, self.rows, out.len(), self.cols)?;
        let packed = &self.packed[row * self.cols / 2..(row + 1) * self.cols / 2];
        let blocks = self.cols / Self::BLOCK;
        for (k, (o, p)) in out.chunks_exact_mut(Self::BLOCK).zip(packed.chunks_exact(Self::BLOCK / 2)).enumerate() {
            let f = self.block_factor(row * blocks + k);
            for (i, y) in o.iter_mut().enumerate() {
                *y = e2m1::decode(e2m1::nibble(p, i)) * f;
            }
        }
        Ok(())
    }
}
