//! INT4 weights, group-wise along a row (groups of 32, 64, 128...), symmetric
//! or asymmetric (zero point), in compressed-tensors' `pack-quantized` layout.
//!
//! ```text
//! packed        u8  [N, K/2]   nibble = q + 8 (0..15); element 2j in the low nibble of byte j
//! scales        f32 [N, K/g]
//! zero_points   i8  [N, K/g]   asymmetric only, -8..7
//! value = (q - zp) * scale     (zp = 0 when symmetric)
//! ```
//!
//! compressed-tensors stores `weight_packed` as int32 [N, K/8]: eight
//! nibbles per word, element i at bits 4i, offset +8. Read as little-endian
//! bytes that is exactly `packed` above (`pack_to_int32`), so those bytes are
//! used as they are. Its `weight_zero_point` (asymmetric) is packed the same
//! way but along the *rows*: int32 [ceil(N/8), K/g], word (r/8, g) holds row
//! r's zero point at bits 4(r%8); see [`unpack_ct_zero_points`].
//! `weight_scale` is [N, K/g] in the weight's dtype (f32 here).
//!
//! Quantizer (compressed-tensors' `calculate_qparams` and `quantize`, bit-exact
//! for f32 weights), per group with `lo = min(min(w), 0)`, `hi = max(max(w), 0)`:
//!
//! - symmetric: `scale = max(|lo|, |hi|) / 7.5` (range -8..7 is 15 wide),
//!   `q = round(clamp(w / scale, -8, 7))`;
//! - asymmetric: `scale = (hi - lo) / 15`,
//!   `zp = round(clamp(-8 - lo / scale, -8, 7))`,
//!   `q = round(clamp(w / scale + zp, -8, 7))`;
//!
//! rounding half to even; a zero scale becomes `f32::EPSILON` (its zero point
//! 0: compressed-tensors computes 0/0 there).

use super::{QuantMatrix, check_finite, check_matrix, check_row, check_shape};
use crate::error::{Error, Result};

/// An INT4 matrix [rows, cols] with one scale (and zero point) per group.
#[derive(Clone, Debug, PartialEq)]
pub struct Int4 {
    rows: usize,
    cols: usize,
    group: usize,
    packed: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Option<Vec<i8>>,
}

const OP: &str = "int4";

fn check_group(group: usize) -> Result<()> {
    if group < 2 || !group.is_multiple_of(2) {
        return Err(Error::op(OP, format!("group size {group} must be even and at least 2")));
    }
    Ok(())
}

impl Int4 {
    /// Quantizes row-major f32 weights `w` [rows, cols] in groups of `group`
    /// (even; `cols` a multiple of it) with or without a zero point.
    pub fn quantize(group: usize, symmetric: bool, w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        check_group(group)?;
        check_matrix(OP, w.len(), rows, cols, group)?;
        check_finite(OP, w)?;
        let groups = rows * cols / group;
        let mut scales = vec![0f32; groups];
        let mut zps = vec![0i8; groups];
        let mut codes = vec![0u8; rows * cols];
        for (gi, (wg, cg)) in w.chunks_exact(group).zip(codes.chunks_exact_mut(group)).enumerate() {
            let lo = wg.iter().fold(0f32, |m, &v| m.min(v));
            let hi = wg.iter().fold(0f32, |m, &v| m.max(v));
            let (scale, zp) = if symmetric {
                (lo.abs().max(hi.abs()) / 7.5, 0f32)
            } else {
                let s = (hi - lo) / 15.0;
                let zp = if s == 0.0 { 0.0 } else { (-8.0 - lo / s).clamp(-8.0, 7.0).round_ties_even() };
                (s, zp)
            };
            let scale = if scale == 0.0 { f32::EPSILON } else { scale };
            scales[gi] = scale;
            zps[gi] = zp as i8;
            for (c, &v) in cg.iter_mut().zip(wg) {
                let q = (v / scale + zp).clamp(-8.0, 7.0).round_ties_even();
                *c = (q as i8 + 8) as u8;
            }
        }
        let mut packed = vec![0u8; rows * cols / 2];
        for (o, pair) in packed.iter_mut().zip(codes.chunks_exact(2)) {
            *o = pair[0] | (pair[1] << 4);
        }
        let zero_points = if symmetric { None } else { Some(zps) };
        Ok(Int4 { rows, cols, group, packed, scales, zero_points })
    }

    /// A matrix from stored tensors: `packed` [rows, cols/2] (compressed-tensors'
    /// `weight_packed` int32 bytes, little-endian), `scales` [rows, cols/group]
    /// (finite), `zero_points` [rows, cols/group] in -8..=7 when asymmetric
    /// (see [`unpack_ct_zero_points`]).
    pub fn from_parts(
        rows: usize,
        cols: usize,
        group: usize,
        packed: Vec<u8>,
        scales: Vec<f32>,
        zero_points: Option<Vec<i8>>,
    ) -> Result<Self> {
        check_group(group)?;
        check_shape(OP, rows, cols, group)?;
        let groups = rows * cols / group;
        if packed.len() != rows * cols / 2 || scales.len() != groups {
            return Err(Error::op(
                OP,
                format!(
                    "[{rows}, {cols}] in groups of {group} needs {} code bytes and {groups} scales, got {} and {}",
                    rows * cols / 2,
                    packed.len(),
                    scales.len()
                ),
            ));
        }
        if scales.iter().any(|s| !s.is_finite()) {
            return Err(Error::op(OP, "a scale is not finite"));
        }
        if let Some(z) = &zero_points
            && (z.len() != groups || z.iter().any(|&v| !(-8..=7).contains(&v)))
        {
            return Err(Error::op(OP, format!("zero points: need {groups} values in -8..=7, got {}", z.len())));
        }
        Ok(Int4 { rows, cols, group, packed, scales, zero_points })
    }

    pub fn group(&self) -> usize {
        self.group
    }

    pub fn is_symmetric(&self) -> bool {
        self.zero_points.is_none()
    }

    /// Packed nibbles (q + 8), [rows, cols/2].
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// Scales, [rows, cols/group].
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Zero points, [rows, cols/group], when asymmetric.
    pub fn zero_points(&self) -> Option<&[i8]> {
        self.zero_points.as_deref()
    }
}

/// compressed-tensors' asymmetric `weight_zero_point` (int32 [ceil(rows/8),
/// groups], given as its little-endian bytes) -> i8 [rows, groups].
pub fn unpack_ct_zero_points(bytes: &[u8], rows: usize, groups: usize) -> Result<Vec<i8>> {
    let words = rows.div_ceil(8);
    if bytes.len() != words * groups * 4 {
        return Err(Error::op(
            OP,
            format!("packed zero points: {} bytes, [{rows}, {groups}] needs {}", bytes.len(), words * groups * 4),
        ));
    }
    let mut out = vec![0i8; rows * groups];
    for r in 0..rows {
        for g in 0..groups {
            let byte = bytes[((r / 8) * groups + g) * 4 + (r % 8) / 2];
            out[r * groups + g] = ((byte >> (4 * (r % 2))) & 0xF) as i8 - 8;
        }
    }
    Ok(out)
}

impl QuantMatrix for Int4 {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn storage_bytes(&self) -> usize {
        // Zero points as compressed-tensors stores them: 4 bits each.
        self.packed.len() + 4 * self.scales.len() + self.zero_points.as_ref().map_or(0, |z| z.len().div_ceil(2))
    }

    fn dequantize_row_into(&self, row: usize, out: &mut [f32]) -> Result<()> {
        check_row(OP, row, self.rows, out.len(), self.cols)?;
        let groups = self.cols / self.group;
        let packed = &self.packed[row * self.cols / 2..(row + 1) * self.cols / 2];
        for (g, (o, p)) in out.chunks_exact_mut(self.group).zip(packed.chunks_exact(self.group / 2)).enumerate() {
            let gi = row * groups + g;
            let s = self.scales[gi];
            let zp = self.zero_points.as_ref().map_or(0.0, |z| z[gi] as f32);
            for (i, y) in o.iter_mut().enumerate() {
                let q = ((p[i / 2] >> (4 * (i % 2))) & 0xF) as i8 - 8;
                *y = (q as f32 - zp) * s;
            }
        }
        Ok(())
    }
}
