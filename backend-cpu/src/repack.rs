//! GGUF's 32-element blocks (Q4_0, Q4_1, Q5_0, Q8_0) repacked 8 rows at a time, as
//! llama.cpp's CPU backend does: one 256-bit register then holds 4 codes of
//! each of 8 rows, so a single `vpdpbusd` against 4 broadcast activations
//! advances 8 outputs and no row needs a horizontal sum.
//!
//! Per group of 8 rows and block b along k (groups one after another, blocks
//! in order inside a group), exactly the bytes of the 8 original blocks:
//!
//! ```text
//! d     8 x f16   rows 0..8
//! m     8 x f16   Q4_1 only
//! qh    8 x u32   Q5_0 only (bit e of row r's word: bit 4 of its element e)
//! codes Q4_*: for quad j in 0..4, for row r: bytes 4j..4j+4 of r's qs
//!             (low nibbles: elements 4j..4j+4, high: 16+4j..16+4j+4)
//!       Q8_0: for quad j in 0..8, for row r: bytes 4j..4j+4 of r's qs,
//!             plus 128 when `biased` (u8 codes for `vpdpbusd`, whose other
//!             operand is signed; the kernel subtracts 128 d sum(x))
//! ```
//!
//! MXFP4 (gpt-oss's experts, from safetensors or GGUF) takes Q4_0's layout:
//! its E2M1 codes in GGUF's nibble order and, for `d`, its E8M0 scale halved
//! as an f16 (exact for exponents 2^-24..2^15; a matrix with another stays
//! on the generic path). The kernel maps each code through a table to twice
//! its E2M1 value plus 12, an integer 0..24, so `w = d (t[code] - 12)` exactly.

use ferrum_engine::Result;
use ferrum_engine::quant::ggml::{GgmlBlocks, GgmlType, dequantize_into};
use ferrum_engine::quant::{Mxfp4, QuantMatrix, e2m1};
use ferrum_engine::tensor::Buffer;
use half::f16;

/// A weight repacked as the module doc says.
#[derive(Debug)]
pub struct Repacked {
    pub ty: GgmlType,
    pub cols: usize,
    /// Q8_0 codes stored plus 128
    pub biased: bool,
    pub data: Vec<u8>,
}

impl Buffer for Repacked {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Bytes of the f16 fields ahead of the codes in one group-block.
pub fn head_bytes(ty: GgmlType) -> usize {
    16 + 8 * second_field(ty)
}

/// Bytes of the per-block field after `d`, kept per row after the 8 `d`s:
/// Q4_1's min (f16), Q5_0's high bits (u32).
fn second_field(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_1 => 2,
        GgmlType::Q5_0 => 4,
        _ => 0,
    }
}

/// Bytes of one group-block: 8 original blocks (MXFP4's as Q4_0's).
pub fn group_block_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::MXFP4 => group_block_bytes(GgmlType::Q4_0),
        _ => 8 * ty.type_size(),
    }
}

/// E8M0 exponents whose half is an f16 (subnormals included): 2^-24..2^15.
const MXFP4_EXPONENTS: std::ops::RangeInclusive<u8> = 104..=143;

/// Whether an MXFP4 matrix can be repacked: whole groups, every scale an f16.
pub fn fits_mxfp4(m: &Mxfp4) -> bool {
    m.rows().is_multiple_of(8) && m.scales().iter().all(|e| MXFP4_EXPONENTS.contains(e))
}

/// Whether `m` can be repacked: a 32-element type we have kernels for, whole groups.
pub fn fits(m: &GgmlBlocks, rows: usize) -> bool {
    matches!(m.ty(), GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0) && rows.is_multiple_of(8)
}

impl Repacked {
    /// `bias_q8`: store Q8_0 codes plus 128 (for the VNNI kernel).
    pub fn new(m: &GgmlBlocks, rows: usize, cols: usize, bias_q8: bool) -> Self {
        let ty = m.ty();
        let (blocks, ts) = (cols / 32, ty.type_size());
        let (head, code_bytes) = (head_bytes(ty), ts - head_bytes(ty) / 8);
        let gb = group_block_bytes(ty);
        let biased = bias_q8 && ty == GgmlType::Q8_0;
        let mut data = vec![0u8; rows * m.row_bytes()];
        for g in 0..rows / 8 {
            for b in 0..blocks {
                let out = &mut data[(g * blocks + b) * gb..][..gb];
                for r in 0..8 {
                    let blk = &m.row(g * 8 + r)[b * ts..(b + 1) * ts];
                    out[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
                    let f = second_field(ty);
                    out[16 + f * r..16 + f * (r + 1)].copy_from_slice(&blk[2..2 + f]);
                    let qs = &blk[head / 8..];
                    for j in 0..code_bytes / 4 {
                        out[head + j * 32 + 4 * r..][..4].copy_from_slice(&qs[4 * j..4 * j + 4]);
                    }
                }
                if biased {
                    out[head..].iter_mut().for_each(|c| *c ^= 0x80);
                }
            }
        }
        Repacked { ty, cols, biased, data }
    }

    /// An MXFP4 matrix in Q4_0's layout (see the module doc); `fits_mxfp4` first.
    pub fn from_mxfp4(m: &Mxfp4) -> Self {
        let (rows, cols) = (m.rows(), m.cols());
        let (blocks, gb) = (cols / 32, group_block_bytes(GgmlType::MXFP4));
        let mut data = vec![0u8; rows / 8 * blocks * gb];
        for g in 0..rows / 8 {
            for b in 0..blocks {
                let out = &mut data[(g * blocks + b) * gb..][..gb];
                for lane in 0..8 {
                    let r = g * 8 + lane;
                    let e = m.scales()[r * blocks + b];
                    let d = f16::from_f32(ferrum_engine::quant::mxfp4::e8m0_to_f32(e) * 0.5);
                    out[2 * lane..2 * lane + 2].copy_from_slice(&d.to_le_bytes());
                    // element i's code: nibble i % 2 of byte i / 2 (OCP order)
                    let packed = &m.packed()[(r * cols + b * 32) / 2..][..16];
                    let code = |i: usize| (packed[i / 2] >> (4 * (i % 2))) & 0x0F;
                    for i in 0..16 {
                        // GGUF order: byte i holds element i (low) and i + 16 (high)
                        out[16 + (i / 4) * 32 + 4 * lane + i % 4] = code(i) | (code(i + 16) << 4);
                    }
                }
            }
        }
        Repacked { ty: GgmlType::MXFP4, cols, biased: false, data }
    }

    /// Row `r` dequantized into `out` (cols values), bit-exact with the
    /// original blocks' reference dequantizer.
    pub fn row_into(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let ty = self.ty;
        if ty == GgmlType::MXFP4 {
            self.mxfp4_row_into(r, out);
            return Ok(());
        }
        let (blocks, ts) = (self.cols / 32, ty.type_size());
        let (head, code_bytes) = (head_bytes(ty), ts - head_bytes(ty) / 8);
        let gb = group_block_bytes(ty);
        let (g, lane) = (r / 8, r % 8);
        let mut blk = [0u8; 34];
        for b in 0..blocks {
            let src = &self.data[(g * blocks + b) * gb..][..gb];
            blk[0..2].copy_from_slice(&src[2 * lane..2 * lane + 2]);
            let f = second_field(ty);
            blk[2..2 + f].copy_from_slice(&src[16 + f * lane..16 + f * (lane + 1)]);
            for j in 0..code_bytes / 4 {
                blk[head / 8 + 4 * j..][..4].copy_from_slice(&src[head + j * 32 + 4 * lane..][..4]);
            }
            if self.biased {
                blk[head / 8..ts].iter_mut().for_each(|c| *c ^= 0x80);
            }
            dequantize_into(ty, &blk[..ts], &mut out[b * 32..(b + 1) * 32])?;
        }
        Ok(())
    }

    /// `row_into` for MXFP4: E2M1 value x (d = 2^(e - 127) / 2) x 2, exactly.
    fn mxfp4_row_into(&self, r: usize, out: &mut [f32]) {
        let (blocks, gb) = (self.cols / 32, group_block_bytes(GgmlType::MXFP4));
        let (g, lane) = (r / 8, r % 8);
        for b in 0..blocks {
            let src = &self.data[(g * blocks + b) * gb..][..gb];
            let d = f16::from_le_bytes([src[2 * lane], src[2 * lane + 1]]).to_f32() * 2.0;
            let o = &mut out[b * 32..(b + 1) * 32];
            for i in 0..16 {
                let byte = src[16 + (i / 4) * 32 + 4 * lane + i % 4];
                o[i] = e2m1::E2M1_VALUES[(byte & 0x0F) as usize] * d;
                o[i + 16] = e2m1::E2M1_VALUES[(byte >> 4) as usize] * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repacked_mxfp4_rows_dequantize_as_the_original() {
        let (rows, cols) = (16, 96);
        let w: Vec<f32> =
            (0..rows * cols).map(|i| ((i * 7919 % 211) as f32 / 50.0 - 2.0) * (1 + i / 300) as f32).collect();
        let m = Mxfp4::quantize(ferrum_engine::quant::MxScaleRule::Ocp, &w, rows, cols).unwrap();
        assert!(fits_mxfp4(&m));
        let p = Repacked::from_mxfp4(&m);
        assert_eq!(p.data.len(), rows * cols / 32 * 18, "Q4_0's bytes: f16 d and 16 code bytes per 32");
        let want = m.dequantize();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for r in 0..rows {
            let mut got = vec![0f32; cols];
            p.row_into(r, &mut got).unwrap();
            assert_eq!(bits(&got), bits(&want[r * cols..(r + 1) * cols]), "row {r}");
        }
        // a scale no f16 holds: not repacked
        let tiny = Mxfp4::from_parts(8, 32, vec![0x11; 128], vec![100; 8]).unwrap();
        assert!(!fits_mxfp4(&tiny));
    }

    #[test]
    fn repacked_rows_dequantize_as_the_original_blocks() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0] {
            let (rows, cols) = (16, 96);
            let bytes: Vec<u8> = (0..rows * cols / 32 * ty.type_size())
                .map(|i| if i % ty.type_size() == 1 { 0x3c } else { (i * 37 % 251) as u8 })
                .collect();
            let m = GgmlBlocks::new(ty, rows, cols, bytes.into()).unwrap();
            for biased in [false, true] {
                let p = Repacked::new(&m, rows, cols, biased);
                assert_eq!(p.data.len(), m.data().len(), "{ty}: same bytes as the file");
                for r in 0..rows {
                    let (mut want, mut got) = (vec![0f32; cols], vec![0f32; cols]);
                    dequantize_into(ty, m.row(r), &mut want).unwrap();
                    p.row_into(r, &mut got).unwrap();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{ty} row {r} (biased {biased})");
                }
            }
        }
    }
}
