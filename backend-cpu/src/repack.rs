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
//! NVFP4 has a scale per 16: its group-block holds 8 f16 `d` for the first
//! 16 elements of the 8 rows, then 8 for the second 16 (each E4M3 scale
//! halved, exact in f16), then the codes as MXFP4's; its tensor scale
//! multiplies every output (`Repacked::scale`).

use ferrum_engine::Result;
use ferrum_engine::quant::ggml::{GgmlBlocks, GgmlType, dequantize_into};
use ferrum_engine::quant::{Mxfp4, Nvfp4, Nvfp4Convention, QuantMatrix, e2m1, fp8};
use ferrum_engine::tensor::Buffer;
use half::f16;

/// What a repacked weight holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// GGUF's blocks of 32 (Q4_0, Q4_1, Q5_0, Q8_0)
    Ggml(GgmlType),
    /// E2M1 codes in Q4_0's layout, a scale per 32
    Mxfp4,
    /// E2M1 codes in Q4_0's layout, a scale per 16 and one per tensor
    Nvfp4(Nvfp4Convention),
}

impl Kind {
    /// Bytes of the f16 fields ahead of the codes in one group-block.
    pub fn head_bytes(self) -> usize {
        match self {
            Kind::Ggml(ty) => 16 + 8 * second_field(ty),
            Kind::Mxfp4 => 16,
            Kind::Nvfp4(_) => 32,
        }
    }

    /// Bytes of one group-block: 8 rows' fields, then their 128 code bytes
    /// (256 for Q8_0).
    pub fn group_block_bytes(self) -> usize {
        match self {
            Kind::Ggml(ty) => 8 * ty.type_size(),
            Kind::Mxfp4 | Kind::Nvfp4(_) => self.head_bytes() + 128,
        }
    }
}

/// A weight repacked as the module doc says.
#[derive(Debug)]
pub struct Repacked {
    pub kind: Kind,
    pub cols: usize,
    /// Q8_0 codes stored plus 128
    pub biased: bool,
    /// NVFP4's tensor scale (ModelOpt's multiplies, compressed-tensors'
    /// divides: see `output_factor`), else 1
    pub scale: f32,
    pub data: Vec<u8>,
}

impl Buffer for Repacked {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
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

/// E8M0 exponents whose half is an f16 (subnormals included): 2^-24..2^15.
const MXFP4_EXPONENTS: std::ops::RangeInclusive<u8> = 104..=143;

/// Whether an MXFP4 matrix can be repacked: whole groups, every scale an f16.
pub fn fits_mxfp4(m: &Mxfp4) -> bool {
    m.rows().is_multiple_of(8) && m.scales().iter().all(|e| MXFP4_EXPONENTS.contains(e))
}

/// Whether an NVFP4 matrix can be repacked: whole groups of rows and of 32 columns.
pub fn fits_nvfp4(m: &Nvfp4) -> bool {
    m.rows().is_multiple_of(8) && m.cols().is_multiple_of(32)
}

/// Row `r`'s 16 code bytes of block `b` in GGUF's order (byte i: element i
/// low, i + 16 high) from E2M1 codes packed two per byte in element order.
fn ggml_order(packed: &[u8], cols: usize, r: usize, b: usize) -> [u8; 16] {
    let packed = &packed[(r * cols + b * 32) / 2..][..16];
    let code = |i: usize| (packed[i / 2] >> (4 * (i % 2))) & 0x0F;
    std::array::from_fn(|i| code(i) | (code(i + 16) << 4))
}

/// E2M1 codes packed two per byte in element order, laid out as `kind`
/// says: each row's block scales (`scales(row, block)`, for its two halves;
/// MXFP4 writes the first) halved as f16 ahead of the codes in GGUF's order.
fn fp4_groups(
    kind: Kind,
    rows: usize,
    cols: usize,
    packed: &[u8],
    scales: impl Fn(usize, usize) -> [f32; 2],
) -> Vec<u8> {
    let (blocks, gb, head) = (cols / 32, kind.group_block_bytes(), kind.head_bytes());
    let halves = head / 16; // 1: one scale per 32; 2: one per 16
    let mut data = vec![0u8; rows / 8 * blocks * gb];
    for g in 0..rows / 8 {
        for b in 0..blocks {
            let out = &mut data[(g * blocks + b) * gb..][..gb];
            for lane in 0..8 {
                let r = g * 8 + lane;
                for (half, s) in scales(r, b).into_iter().take(halves).enumerate() {
                    out[16 * half + 2 * lane..][..2].copy_from_slice(&f16::from_f32(s * 0.5).to_le_bytes());
                }
                put_codes(out, head, lane, &ggml_order(packed, cols, r, b));
            }
        }
    }
    data
}

/// Lane `lane`'s 16 code bytes into a group-block's codes (after `head`).
fn put_codes(out: &mut [u8], head: usize, lane: usize, qs: &[u8; 16]) {
    for (i, &q) in qs.iter().enumerate() {
        out[head + (i / 4) * 32 + 4 * lane + i % 4] = q;
    }
}

/// Whether `m` can be repacked: a 32-element type we have kernels for, whole groups.
pub fn fits(m: &GgmlBlocks, rows: usize) -> bool {
    matches!(m.ty(), GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0) && rows.is_multiple_of(8)
}

impl Repacked {
    /// `bias_q8`: store Q8_0 codes plus 128 (for the VNNI kernel).
    pub fn new(m: &GgmlBlocks, rows: usize, cols: usize, bias_q8: bool) -> Self {
        let (ty, kind) = (m.ty(), Kind::Ggml(m.ty()));
        let (blocks, ts) = (cols / 32, ty.type_size());
        let (head, code_bytes) = (kind.head_bytes(), ts - kind.head_bytes() / 8);
        let gb = kind.group_block_bytes();
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
        Repacked { kind, cols, biased, scale: 1.0, data }
    }

    /// An MXFP4 matrix in Q4_0's layout (see the module doc); `fits_mxfp4` first.
    pub fn from_mxfp4(m: &Mxfp4) -> Self {
        let blocks = m.cols() / 32;
        let data = fp4_groups(Kind::Mxfp4, m.rows(), m.cols(), m.packed(), |r, b| {
            [ferrum_engine::quant::mxfp4::e8m0_to_f32(m.scales()[r * blocks + b]); 2]
        });
        Repacked { kind: Kind::Mxfp4, cols: m.cols(), biased: false, scale: 1.0, data }
    }

    /// An NVFP4 matrix in its layout (see the module doc); `fits_nvfp4` first.
    pub fn from_nvfp4(m: &Nvfp4) -> Self {
        let kind = Kind::Nvfp4(m.convention());
        let per_row = m.cols() / 16;
        let data = fp4_groups(kind, m.rows(), m.cols(), m.packed(), |r, b| {
            [0, 1].map(|half| fp8::decode(m.scales()[r * per_row + 2 * b + half]))
        });
        Repacked { kind, cols: m.cols(), biased: false, scale: m.tensor_scale(), data }
    }

    /// What multiplies every output of the kernel: 1 / NVFP4's
    /// compressed-tensors global scale, its ModelOpt tensor scale, else 1.
    pub fn output_factor(&self) -> f32 {
        match self.kind {
            Kind::Nvfp4(Nvfp4Convention::CompressedTensors) => 1.0 / self.scale,
            Kind::Nvfp4(Nvfp4Convention::ModelOpt) => self.scale,
            _ => 1.0,
        }
    }

    /// Row `r` dequantized into `out` (cols values), bit-exact with the
    /// original blocks' reference dequantizer.
    pub fn row_into(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let ty = match self.kind {
            Kind::Ggml(ty) => ty,
            Kind::Mxfp4 | Kind::Nvfp4(_) => {
                self.fp4_row_into(r, out);
                return Ok(());
            }
        };
        let (blocks, ts) = (self.cols / 32, ty.type_size());
        let (head, code_bytes) = (self.kind.head_bytes(), ts - self.kind.head_bytes() / 8);
        let gb = self.kind.group_block_bytes();
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

    /// `row_into` for MXFP4 (E2M1 value x 2^(e - 127), d being its half)
    /// and NVFP4 (E2M1 value x (E4M3 scale x tensor scale)), exactly as the
    /// reference decodes them.
    fn fp4_row_into(&self, r: usize, out: &mut [f32]) {
        let (blocks, gb, head) = (self.cols / 32, self.kind.group_block_bytes(), self.kind.head_bytes());
        let (g, lane) = (r / 8, r % 8);
        let f16_at = |src: &[u8], at: usize| f16::from_le_bytes([src[at], src[at + 1]]).to_f32();
        for b in 0..blocks {
            let src = &self.data[(g * blocks + b) * gb..][..gb];
            // each half's factor: the stored half scale doubled (times the tensor scale)
            let factor = |at: usize| {
                let s = f16_at(src, at) * 2.0;
                match self.kind {
                    Kind::Nvfp4(Nvfp4Convention::ModelOpt) => s * self.scale,
                    Kind::Nvfp4(Nvfp4Convention::CompressedTensors) => s / self.scale,
                    _ => s,
                }
            };
            // the second half's scale follows the 8 rows' first ones (NVFP4), or is the first (MXFP4)
            let (lo, hi) = (factor(2 * lane), factor((head - 16) + 2 * lane));
            let o = &mut out[b * 32..(b + 1) * 32];
            for i in 0..16 {
                let byte = src[head + (i / 4) * 32 + 4 * lane + i % 4];
                o[i] = e2m1::E2M1_VALUES[(byte & 0x0F) as usize] * lo;
                o[i + 16] = e2m1::E2M1_VALUES[(byte >> 4) as usize] * hi;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of growing size, in several blocks per row.
    fn fp4_weights(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols).map(|i| ((i * 7919 % 211) as f32 / 50.0 - 2.0) * (1 + i / 300) as f32).collect()
    }

    /// Every row of `p` bit for bit `want`'s.
    fn assert_rows(p: &Repacked, want: &[f32], cols: usize, what: &str) {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (r, want) in want.chunks_exact(cols).enumerate() {
            let mut got = vec![0f32; cols];
            p.row_into(r, &mut got).unwrap();
            assert_eq!(bits(&got), bits(want), "{what} row {r}");
        }
    }

    #[test]
    fn repacked_nvfp4_rows_dequantize_as_the_original() {
        let (rows, cols) = (16, 96);
        for convention in [Nvfp4Convention::ModelOpt, Nvfp4Convention::CompressedTensors] {
            let m = Nvfp4::quantize(convention, &fp4_weights(rows, cols), rows, cols).unwrap();
            assert!(fits_nvfp4(&m));
            let p = Repacked::from_nvfp4(&m);
            assert_eq!(p.data.len(), rows * cols / 32 * 20, "two f16 scales and 16 code bytes per 32");
            assert_rows(&p, &m.dequantize(), cols, &format!("{convention:?}"));
        }
    }

    #[test]
    fn repacked_mxfp4_rows_dequantize_as_the_original() {
        let (rows, cols) = (16, 96);
        let m = Mxfp4::quantize(ferrum_engine::quant::MxScaleRule::Ocp, &fp4_weights(rows, cols), rows, cols).unwrap();
        assert!(fits_mxfp4(&m));
        let p = Repacked::from_mxfp4(&m);
        assert_eq!(p.data.len(), rows * cols / 32 * 18, "Q4_0's bytes: f16 d and 16 code bytes per 32");
        assert_rows(&p, &m.dequantize(), cols, "mxfp4");
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
