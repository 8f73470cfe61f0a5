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

use ferrum_engine::Result;
use ferrum_engine::quant::ggml::{GgmlBlocks, GgmlType, dequantize_into};
use ferrum_engine::tensor::Buffer;

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

/// Bytes of one group-block: 8 original blocks.
pub fn group_block_bytes(ty: GgmlType) -> usize {
    8 * ty.type_size()
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

    /// Row `r` dequantized into `out` (cols values), bit-exact with the
    /// original blocks' reference dequantizer.
    pub fn row_into(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let ty = self.ty;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
