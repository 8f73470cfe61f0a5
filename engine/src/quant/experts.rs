//! Quantizing a stack of experts [experts * n, k] the way ModelOpt quantizes
//! a mixture of experts: every expert as its own tensor, so an expert with
//! small weights keeps its resolution beside one with large ones. This is
//! also what a published checkpoint stores (one tensor scale per expert), so
//! quantizing on load and loading `ferrum quantize`'s output agree bit for bit.
//!
//! Only the formats with a per-tensor scale differ from quantizing the stack
//! whole: FP8 per tensor (each expert's scale becomes its rows' scale, a
//! per-channel matrix) and NVFP4 (its one tensor scale cannot hold several,
//! so the stack keeps tensor scale 1 and each expert's products are scaled:
//! `moe_matmul`'s per-expert scale). The other formats' scales are per row
//! or per block along a row already.

use super::{Fp8Scaling, Fp8Weight, Nvfp4, Nvfp4Convention, QuantFormat, QuantizedMatrix};
use crate::error::Result;

/// A quantized stack, and the per-expert scales of its products when its
/// format needs them (see the module doc).
pub fn quantize_experts(
    format: QuantFormat,
    w: &[f32],
    experts: usize,
    rows: usize,
    cols: usize,
) -> Result<(QuantizedMatrix, Option<Vec<f32>>)> {
    let whole = || QuantizedMatrix::quantize(format, w, rows, cols).map(|m| (m, None));
    if experts <= 1 || !rows.is_multiple_of(experts) {
        return whole();
    }
    let n = rows / experts;
    let each = w.chunks_exact(n * cols);
    match format {
        QuantFormat::Fp8(Fp8Scaling::PerTensor) => {
            let (mut data, mut scales) = (Vec::with_capacity(rows * cols), Vec::with_capacity(rows));
            for expert in each {
                let q = Fp8Weight::quantize(Fp8Scaling::PerTensor, expert, n, cols)?;
                data.extend_from_slice(q.data());
                scales.extend(std::iter::repeat_n(q.scales()[0], n));
            }
            let m = Fp8Weight::from_parts(Fp8Scaling::PerChannel, rows, cols, data, scales)?;
            Ok((QuantizedMatrix::Fp8(m), None))
        }
        QuantFormat::Nvfp4(convention) => {
            let (mut packed, mut scales, mut tensor) = (Vec::new(), Vec::new(), Vec::with_capacity(experts));
            for expert in each {
                let q = Nvfp4::quantize(convention, expert, n, cols)?;
                packed.extend_from_slice(q.packed());
                scales.extend_from_slice(q.scales());
                tensor.push(q.tensor_scale());
            }
            if tensor.iter().all(|&t| t == tensor[0]) {
                let m = Nvfp4::from_parts(convention, rows, cols, packed, scales, tensor[0])?;
                return Ok((QuantizedMatrix::Nvfp4(m), None));
            }
            let per_expert = match convention {
                Nvfp4Convention::ModelOpt => tensor,
                Nvfp4Convention::CompressedTensors => tensor.iter().map(|g| 1.0 / g).collect(),
            };
            let m = Nvfp4::from_parts(convention, rows, cols, packed, scales, 1.0)?;
            Ok((QuantizedMatrix::Nvfp4(m), Some(per_expert)))
        }
        _ => whole(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Experts of very different sizes: expert e's weights are 4^e times expert 0's.
    fn stack(experts: usize, n: usize, k: usize) -> Vec<f32> {
        (0..experts * n * k)
            .map(|i| {
                let e = i / (n * k);
                ((i * 7919 % 113) as f32 / 56.0 - 1.0) * 4f32.powi(e as i32)
            })
            .collect()
    }

    /// Expert e's rows of the stack times its scale, widened.
    fn expert_values(m: &QuantizedMatrix, scales: Option<&[f32]>, e: usize, n: usize, k: usize) -> Vec<f32> {
        let all = m.dequantize();
        all[e * n * k..(e + 1) * n * k].iter().map(|v| v * scales.map_or(1.0, |s| s[e])).collect()
    }

    #[test]
    fn each_expert_is_quantized_as_its_own_tensor() {
        let (experts, n, k) = (3, 4, 32);
        let w = stack(experts, n, k);
        for format in ["nvfp4", "nvfp4:ct", "fp8"] {
            let format: QuantFormat = format.parse().unwrap();
            let (m, scales) = quantize_experts(format, &w, experts, experts * n, k).unwrap();
            assert_eq!(scales.is_some(), matches!(format, QuantFormat::Nvfp4(_)), "{format}");
            for e in 0..experts {
                let alone = QuantizedMatrix::quantize(format, &w[e * n * k..(e + 1) * n * k], n, k).unwrap();
                let got = expert_values(&m, scales.as_deref(), e, n, k);
                for (g, want) in got.iter().zip(alone.dequantize()) {
                    // the same codes and block scales; only the scale's product may round differently
                    assert!((g - want).abs() <= want.abs() * 1e-6, "{format} expert {e}: {g} vs {want}");
                }
            }
        }
    }

    #[test]
    fn one_tensor_scale_for_all_needs_no_expert_scales() {
        let w = [stack(1, 4, 32), stack(1, 4, 32)].concat();
        let (m, scales) = quantize_experts("nvfp4".parse().unwrap(), &w, 2, 8, 32).unwrap();
        assert!(scales.is_none());
        assert_eq!(m, QuantizedMatrix::quantize("nvfp4".parse().unwrap(), &w, 8, 32).unwrap());
    }
}
