//! MXFP4 (OCP Microscaling Formats v1.0): blocks of 32 E2M1 values along a
//! row sharing one E8M0 scale.
//!
//! ```text
//! packed  u8 [N, K/2]   E2M1 codes, element 2j in the low nibble of byte j
//! scales  u8 [N, K/32]  E8M0: 2^(e - 127); e = 0 is 2^-127 (there is no zero), 0xFF is NaN
//! value = E2M1[code] * 2^(e - 127)
//! ```
//!
//! **gpt-oss** stores the same bytes as `*_blocks` u8 [E, N, K/32, 16] and
//! `*_scales` u8 [E, N, K/32]: transformers' `convert_moe_packed_tensors`
//! reads byte j of a block's 16 as element 2j (low nibble, `blk & 0x0F`) and
//! 2j + 1 (high nibble, `blk >> 4`), and computes `ldexp(E2M1[code], e - 127)`.
//! Rows are the output features (2I for `gate_up_proj`, H for `down_proj`):
//! one expert's blocks, flattened, are exactly `packed` [N, K/2] (see
//! [`Mxfp4::from_gpt_oss`]). transformers transposes the result to [E, K, N]
//! for its `x @ W`; here the matrix stays [N, K] like `nn.Linear`. For e = 255
//! transformers gets Inf or NaN from `ldexp`; here every value is NaN (OCP).
//! compressed-tensors' `mxfp4-pack-quantized` (`weight_packed` [N, K/2],
//! `weight_scale` u8 [N, K/32]) is the same layout.
//!
//! **Shared exponent** (two rules; elements are then `E2M1(w / 2^(e-127))`,
//! RNE, saturating at 6, small negatives -> code 8, see [`super::e2m1`]):
//!
//! - [`MxScaleRule::Ocp`], the spec's: `e - 127 = floor(log2(amax)) - 2`
//!   (2 = the exponent of E2M1's largest power of two), clamped to
//!   [-127, 127]; an all-zero block takes e = 0, as the OCP reference
//!   (microxcaling) does by flooring `log2(FP32_MIN_NORMAL)`. `amax / scale`
//!   is in [4, 8), so a block's values above 6 x scale saturate.
//! - [`MxScaleRule::CompressedTensors`] (`generate_mx_scales`, after vLLM's
//!   reference): amax is first rounded to a power of two *upwards when its
//!   mantissa is >= 1.75* (`round_to_power_2`: add 2^21 to the f32 bits,
//!   keep sign and exponent), then `e - 127 = log2 of that - 2`, clamped to
//!   e >= 0; an all-zero block (and one whose amax is an f32 subnormal) gets
//!   e = 0. Fewer saturations than the OCP rule.
//!
//! (NVIDIA ModelOpt's `MXFP4QTensor` uses a third rule, e = ceil(log2(amax/6)),
//! and rounds element ties toward zero and encodes exact zeros as -0; it is
//! not reproduced here.)

use super::{QuantMatrix, check_finite, check_matrix, check_row, check_shape, e2m1};
use crate::error::{Error, Result};

/// How the shared block exponent is chosen (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MxScaleRule {
    /// OCP MX v1.0: `floor(log2(amax)) - 2`.
    Ocp,
    /// compressed-tensors / vLLM: amax rounded to a power of two (up from
    /// mantissa 1.75), then `- 2`.
    CompressedTensors,
}

/// An MXFP4 matrix [rows, cols] (see the module doc for the layout).
#[derive(Clone, Debug, PartialEq)]
pub struct Mxfp4 {
    rows: usize,
    cols: usize,
    packed: Vec<u8>,
    scales: Vec<u8>,
}

const OP: &str = "mxfp4";

/// The value of an E8M0 scale byte: 2^(e - 127), NaN for 0xFF.
#[inline]
pub fn e8m0_to_f32(e: u8) -> f32 {
    match e {
        0xFF => f32::NAN,
        0 => f32::from_bits(0x0040_0000), // 2^-127, an f32 subnormal
        e => f32::from_bits((e as u32) << 23),
    }
}

/// floor(log2(x)) of a positive finite f32 (subnormals included), exactly.
fn floor_log2(x: f32) -> i32 {
    let bits = x.to_bits() & 0x7FFF_FFFF;
    let exp = (bits >> 23) as i32;
    if exp > 0 { exp - 127 } else { (31 - bits.leading_zeros() as i32) - 149 }
}

/// The E8M0 byte of a block whose largest magnitude is `amax`.
pub fn shared_exponent(rule: MxScaleRule, amax: f32) -> u8 {
    match rule {
        MxScaleRule::Ocp => {
            let e = if amax == 0.0 { -127 } else { (floor_log2(amax) - 2).clamp(-127, 127) };
            (e + 127) as u8
        }
        MxScaleRule::CompressedTensors => {
            let p = f32::from_bits((amax.to_bits().wrapping_add(1 << 21)) & 0xFF80_0000);
            if p == 0.0 {
                return 0;
            }
            ((floor_log2(p) - 2).clamp(-127, 127) + 127) as u8
        }
    }
}

impl Mxfp4 {
    /// Elements per E8M0 scale.
    pub const BLOCK: usize = 32;

    /// Quantizes row-major f32 weights `w` [rows, cols] (cols a multiple of 32,
    /// finite values) with the shared-exponent `rule`.
    pub fn quantize(rule: MxScaleRule, w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        check_matrix(OP, w.len(), rows, cols, Self::BLOCK)?;
        check_finite(OP, w)?;
        let mut scales = vec![0u8; rows * cols / Self::BLOCK];
        let mut codes = vec![0u8; rows * cols];
        for (b, (wb, cb)) in w.chunks_exact(Self::BLOCK).zip(codes.chunks_exact_mut(Self::BLOCK)).enumerate() {
            let amax = wb.iter().fold(0f32, |m, v| m.max(v.abs()));
            scales[b] = shared_exponent(rule, amax);
            let scale = e8m0_to_f32(scales[b]);
            for (c, &v) in cb.iter_mut().zip(wb) {
                *c = e2m1::encode(v / scale);
            }
        }
        let mut packed = vec![0u8; rows * cols / 2];
        e2m1::pack_into(&codes, &mut packed);
        Ok(Mxfp4 { rows, cols, packed, scales })
    }

    /// A matrix from stored tensors: `packed` u8 [rows, cols/2], `scales` E8M0
    /// [rows, cols/32] (compressed-tensors' `weight_packed` / `weight_scale`).
    pub fn from_parts(rows: usize, cols: usize, packed: Vec<u8>, scales: Vec<u8>) -> Result<Self> {
        check_shape(OP, rows, cols, Self::BLOCK)?;
        if packed.len() != rows * cols / 2 || scales.len() != rows * cols / Self::BLOCK {
            return Err(Error::op(
                OP,
                format!(
                    "[{rows}, {cols}] needs {} code bytes and {} scales, got {} and {}",
                    rows * cols / 2,
                    rows * cols / Self::BLOCK,
                    packed.len(),
                    scales.len()
                ),
            ));
        }
        Ok(Mxfp4 { rows, cols, packed, scales })
    }

    /// Expert `expert` of gpt-oss tensors: `blocks` u8 of shape
    /// `[..., N, K/32, 16]` and `scales` u8 of shape `[..., N, K/32]` with the
    /// same leading dimensions, which are flattened to index `expert` (pass 0
    /// when there are none). Gives the matrix [N, K].
    pub fn from_gpt_oss(
        blocks: &[u8],
        blocks_shape: &[usize],
        scales: &[u8],
        scales_shape: &[usize],
        expert: usize,
    ) -> Result<Self> {
        let bad = |msg: String| {
            Err(Error::op(OP, format!("gpt-oss blocks {blocks_shape:?} / scales {scales_shape:?}: {msg}")))
        };
        let [prefix @ .., n, g, 16] = blocks_shape else {
            return bad("blocks must have shape [..., N, K/32, 16]".into());
        };
        if scales_shape != &blocks_shape[..blocks_shape.len() - 1] {
            return bad("scales must have the blocks' shape without its last dimension".into());
        }
        let experts = prefix.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let per_expert = n.checked_mul(*g).and_then(|x| x.checked_mul(16));
        let (Some(experts), Some(per_expert)) = (experts, per_expert) else {
            return bad("shape overflows".into());
        };
        if experts.checked_mul(per_expert) != Some(blocks.len()) || experts * n * g != scales.len() {
            return bad(format!("{} block bytes and {} scales do not match the shapes", blocks.len(), scales.len()));
        }
        if expert >= experts {
            return bad(format!("expert {expert} out of range ({experts})"));
        }
        let (rows, cols) = (*n, g * Self::BLOCK);
        let packed = blocks[expert * per_expert..(expert + 1) * per_expert].to_vec();
        let sc = scales[expert * n * g..(expert + 1) * n * g].to_vec();
        Self::from_parts(rows, cols, packed, sc)
    }

    /// A matrix [rows, cols] from GGUF's MXFP4 blocks (17 bytes per 32
    /// elements: the E8M0 byte, then 16 code bytes whose byte j holds element
    /// j in its low nibble and element j + 16 in its high one; see
    /// `ggml::blocks`): the same codes and scales, the nibbles reordered.
    /// Values equal ggml's dequantization except for e = 255, NaN here (OCP)
    /// and 2^127 in ggml.
    pub fn from_ggml(rows: usize, cols: usize, blocks: &[u8]) -> Result<Self> {
        check_shape(OP, rows, cols, Self::BLOCK)?;
        let n_blocks = rows * cols / Self::BLOCK;
        if blocks.len() != n_blocks * 17 {
            return Err(Error::op(
                OP,
                format!("[{rows}, {cols}] needs {} GGUF block bytes, got {}", n_blocks * 17, blocks.len()),
            ));
        }
        let (mut packed, mut scales) = (Vec::with_capacity(n_blocks * 16), Vec::with_capacity(n_blocks));
        for b in blocks.chunks_exact(17) {
            scales.push(b[0]);
            let code = |j: usize| if j < 16 { b[1 + j] & 0xF } else { b[1 + j - 16] >> 4 };
            packed.extend((0..16).map(|j| code(2 * j) | (code(2 * j + 1) << 4)));
        }
        Self::from_parts(rows, cols, packed, scales)
    }

    /// The packed codes, u8 [rows, cols/2].
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// The E8M0 scale bytes, [rows, cols/32].
    pub fn scales(&self) -> &[u8] {
        &self.scales
    }
}

impl QuantMatrix for Mxfp4 {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn storage_bytes(&self) -> usize {
        self.packed.len() + self.scales.len()
    }

    fn dequantize_row_into(&self, row: usize, out: &mut [f32]) -> Result<()> {
        check_row(OP, row, self.rows, out.len(), self.cols)?;
        let packed = &self.packed[row * self.cols / 2..(row + 1) * self.cols / 2];
        let scales = &self.scales[row * self.cols / Self::BLOCK..(row + 1) * self.cols / Self::BLOCK];
        for ((o, p), &e) in out.chunks_exact_mut(Self::BLOCK).zip(packed.chunks_exact(Self::BLOCK / 2)).zip(scales) {
            let s = e8m0_to_f32(e);
            for (i, y) in o.iter_mut().enumerate() {
                *y = e2m1::decode(e2m1::nibble(p, i)) * s;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_log2_is_exact() {
        assert_eq!(floor_log2(1.0), 0);
        assert_eq!(floor_log2(0.999_999_94), -1);
        assert_eq!(floor_log2(1_023.999_94), 9);
        assert_eq!(floor_log2(f32::from_bits(1)), -149);
        assert_eq!(floor_log2(f32::from_bits(0x0040_0000)), -127);
    }

    #[test]
    fn shared_exponents() {
        assert_eq!(shared_exponent(MxScaleRule::Ocp, 6.0), 127); // floor(log2 6) = 2
        assert_eq!(shared_exponent(MxScaleRule::Ocp, 7.9), 127);
        assert_eq!(shared_exponent(MxScaleRule::Ocp, 0.0), 0);
        assert_eq!(shared_exponent(MxScaleRule::CompressedTensors, 7.0), 128); // 7 = 1.75 * 4 rounds up to 8
        assert_eq!(shared_exponent(MxScaleRule::CompressedTensors, 6.9), 127);
        assert_eq!(shared_exponent(MxScaleRule::CompressedTensors, 0.0), 0);
        assert!(e8m0_to_f32(255).is_nan());
        assert_eq!(e8m0_to_f32(127), 1.0);
        assert_eq!(e8m0_to_f32(0), 2f32.powi(-127));
    }
}
