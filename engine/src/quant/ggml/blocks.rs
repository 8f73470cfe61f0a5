//! Dequantization of ggml block formats to f32, one function per format.
//!
//! Every block function reads one block (`type_size` bytes) and writes its
//! `block_size` values. Layouts are those of llama.cpp's `ggml-common.h` and the
//! arithmetic follows `gguf.quants` (llama.cpp's Python reference) operation for
//! operation, in f32: scales are multiplied out first (`d * sc`), then applied to
//! the quant (`(d * sc) * q - dmin * m`). Rust never fuses a multiply-add on its
//! own, so results equal the package's bit for bit (checked by `tests/gguf.rs`).
//!
//! All multi-byte fields are little-endian; `f16` is IEEE half. "Low nibble"
//! is `b & 0xF`, "high nibble" `b >> 4`. In the 32-element formats, byte `j`'s
//! low nibble is element `j` and its high nibble element `j + 16` (not `2j` and
//! `2j + 1`).

use half::{bf16, f16};

use super::GgmlType;
use crate::error::{Error, Result};

/// Dequantizes `n_elements` values of type `ty` stored in `bytes`.
///
/// `bytes` must be exactly the size of `n_elements` (a whole number of blocks).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>> {
    check_sizes(ty, bytes, n_elements)?;
    let mut out = vec![0f32; n_elements];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

/// Dequantizes `bytes` of type `ty` into `out` (one value per element).
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_sizes(ty, bytes, out.len())?;
    let block: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => f32_le,
        GgmlType::F16 => f16_le,
        GgmlType::BF16 => bf16_le,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q2_K => q2_k,
        GgmlType::Q3_K => q3_k,
        GgmlType::Q4_K => q4_k,
        GgmlType::Q5_K => q5_k,
        GgmlType::Q6_K => q6_k,
        GgmlType::MXFP4 => mxfp4,
        other => return Err(Error::op("dequantize", format!("{other} is not supported yet"))),
    };
    let (block_size, type_size) = (ty.block_size(), ty.type_size());
    for (b, o) in bytes.chunks_exact(type_size).zip(out.chunks_exact_mut(block_size)) {
        block(b, o);
    }
    Ok(())
}

/// Byte offsets of the f16 fields (scales and mins) inside one block of
/// `ty`; every other byte is a code or a small integer scale. Empty for
/// types without block scales.
pub fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

fn check_sizes(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<()> {
    let Some(need) = ty.bytes_for(n_elements) else {
        return Err(Error::op(
            "dequantize",
            format!("{n_elements} elements are not a whole number of {ty} blocks of {}", ty.block_size()),
        ));
    };
    if bytes.len() != need {
        return Err(Error::op(
            "dequantize",
            format!("{n_elements} {ty} elements take {need} bytes, got {}", bytes.len()),
        ));
    }
    Ok(())
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// F32: 4 bytes, IEEE single.
fn f32_le(b: &[u8], out: &mut [f32]) {
    out[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
}

/// F16: 2 bytes, IEEE half (exactly representable in f32).
fn f16_le(b: &[u8], out: &mut [f32]) {
    out[0] = f16_at(b, 0);
}

/// BF16: 2 bytes, the upper half of an f32.
fn bf16_le(b: &[u8], out: &mut [f32]) {
    out[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32();
}

/// The 4-bit quant of element `j` (0..32) of a 16-byte nibble array.
fn nibble32(qs: &[u8], j: usize) -> u8 {
    if j < 16 { qs[j] & 0xF } else { qs[j - 16] >> 4 }
}

/// Q4_0, 32 elements in 18 bytes: `d: f16, qs: [u8; 16]` (4-bit quants, see
/// the module doc for the nibble order). `y = d * (q - 8)`.
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for (j, y) in out.iter_mut().enumerate() {
        *y = d * (nibble32(qs, j) as i32 - 8) as f32;
    }
}

/// Q4_1, 32 elements in 20 bytes: `d: f16, m: f16, qs: [u8; 16]`.
/// `y = d * q + m`.
fn q4_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    for (j, y) in out.iter_mut().enumerate() {
        *y = d * nibble32(qs, j) as f32 + m;
    }
}

/// The 5-bit quant of element `j`: its nibble, plus bit `j` of `qh` as bit 4.
fn quint32(qh: u32, qs: &[u8], j: usize) -> u8 {
    nibble32(qs, j) | ((((qh >> j) & 1) as u8) << 4)
}

/// Q5_0, 32 elements in 22 bytes: `d: f16, qh: u32 (bit j = bit 4 of element
/// j), qs: [u8; 16]` (bits 0-3). `y = d * (q - 16)`.
fn q5_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for (j, y) in out.iter_mut().enumerate() {
        *y = d * (quint32(qh, qs, j) as i32 - 16) as f32;
    }
}

/// Q5_1, 32 elements in 24 bytes: `d: f16, m: f16, qh: u32, qs: [u8; 16]`.
/// `y = d * q + m`.
fn q5_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for (j, y) in out.iter_mut().enumerate() {
        *y = d * quint32(qh, qs, j) as f32 + m;
    }
}

/// Q8_0, 32 elements in 34 bytes: `d: f16, qs: [i8; 32]`. `y = q * d`.
fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, y) in out.iter_mut().enumerate() {
        *y = (b[2 + j] as i8) as f32 * d;
    }
}

// The k-quants: super-blocks of 256 elements (QK_K) split into sub-blocks of
// 16 or 32 elements, each with its own small scale (and min) quantized against
// the super-block's f16 `d` (and `dmin`).
//
// Element `i` of a 2-bit array `qs: [u8; 64]` (Q2_K, Q3_K low bits): the 256
// elements form two halves of 128; in half `h` byte `h*32 + l` holds elements
// `h*128 + l`, `+32`, `+64`, `+96` in bits 0-1, 2-3, 4-5, 6-7.

/// The 2-bit field of element `i` (0..256) of a 64-byte array.
fn crumb256(qs: &[u8], i: usize) -> u8 {
    let (half, rest) = (i / 128, i % 128);
    (qs[half * 32 + rest % 32] >> (2 * (rest / 32))) & 3
}

/// Q2_K, 256 elements in 84 bytes:
/// `scales: [u8; 16]` (sub-block s of 16 elements: low nibble scale, high
/// nibble min), `qs: [u8; 64]` (2-bit quants, see above), `d: f16, dmin: f16`.
/// `y = (d * sc) * q - dmin * m`.
fn q2_k(b: &[u8], out: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (i, y) in out.iter_mut().enumerate() {
        let s = scales[i / 16];
        let dl = d * (s & 0xF) as f32;
        let ml = dmin * (s >> 4) as f32;
        *y = dl * crumb256(qs, i) as f32 - ml;
    }
}

/// The signed 6-bit scale of Q3_K sub-block `s` (0..16) from its 12 packed
/// bytes: bits 0-3 are the low nibble of byte `s` (s < 8) or the high nibble
/// of byte `s - 8`; bits 4-5 are bits `2*(s/4)..` of byte `8 + s%4`. Minus 32.
fn q3_k_scale(sc: &[u8], s: usize) -> i32 {
    let low = if s < 8 { sc[s] & 0xF } else { sc[s - 8] >> 4 };
    let high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

/// Q3_K, 256 elements in 110 bytes:
/// `hmask: [u8; 32]` (bit `i / 32` of byte `i % 32` is the high bit of element
/// `i`), `qs: [u8; 64]` (low 2 bits, see above), `scales: [u8; 12]` (16 signed
/// 6-bit scales, see [`q3_k_scale`]), `d: f16`.
/// `q = low - 4` when the high bit is 0, else `low`; `y = (d * sc) * q`.
fn q3_k(b: &[u8], out: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let scales = &b[96..108];
    let d = f16_at(b, 108);
    for (i, y) in out.iter_mut().enumerate() {
        let high = (hmask[i % 32] >> (i / 32)) & 1;
        let q = crumb256(qs, i) as i32 - if high == 0 { 4 } else { 0 };
        let dl = d * q3_k_scale(scales, i / 16) as f32;
        *y = dl * q as f32;
    }
}

/// The 6-bit (scale, min) of Q4_K/Q5_K sub-block `s` (0..8) from 12 packed
/// bytes. For s < 4: scale = `sc[s] & 63`, min = `sc[s + 4] & 63`. For s >= 4:
/// scale = low nibble of `sc[s + 4]` | top 2 bits of `sc[s - 4]` as bits 4-5;
/// min = high nibble of `sc[s + 4]` | top 2 bits of `sc[s]` as bits 4-5.
fn k_scale_min(sc: &[u8], s: usize) -> (u8, u8) {
    if s < 4 {
        (sc[s] & 63, sc[s + 4] & 63)
    } else {
        ((sc[s + 4] & 0xF) | ((sc[s - 4] >> 6) << 4), (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4))
    }
}

/// The 4-bit field of element `i` (0..256) of a 128-byte array: 4 chunks of
/// 64 elements; in chunk `c` byte `c*32 + l` holds elements `c*64 + l` (low
/// nibble) and `c*64 + 32 + l` (high nibble).
fn nibble256(qs: &[u8], i: usize) -> u8 {
    let (chunk, rest) = (i / 64, i % 64);
    (qs[chunk * 32 + rest % 32] >> (4 * (rest / 32))) & 0xF
}

/// Q4_K, 256 elements in 144 bytes: `d: f16, dmin: f16, scales: [u8; 12]`
/// (8 sub-blocks of 32, see [`k_scale_min`]), `qs: [u8; 128]` (see
/// [`nibble256`]). `y = (d * sc) * q - dmin * m`.
fn q4_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (i, y) in out.iter_mut().enumerate() {
        let (sc, m) = k_scale_min(scales, i / 32);
        let dl = d * sc as f32;
        let ml = dmin * m as f32;
        *y = dl * nibble256(qs, i) as f32 - ml;
    }
}

/// Q5_K, 256 elements in 176 bytes: `d: f16, dmin: f16, scales: [u8; 12]`,
/// `qh: [u8; 32]` (bit `i / 32` of byte `i % 32` is bit 4 of element `i`),
/// `qs: [u8; 128]` (bits 0-3, as in Q4_K). `y = (d * sc) * q - dmin * m`.
fn q5_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (i, y) in out.iter_mut().enumerate() {
        let (sc, m) = k_scale_min(scales, i / 32);
        let high = (qh[i % 32] >> (i / 32)) & 1;
        let q = nibble256(qs, i) | (high << 4);
        let dl = d * sc as f32;
        let ml = dmin * m as f32;
        *y = dl * q as f32 - ml;
    }
}

/// Q6_K, 256 elements in 210 bytes: `ql: [u8; 128]` (bits 0-3: two halves of
/// 128; in half `h` byte `h*64 + l` (l < 64) holds element `h*128 + l` in its
/// low nibble and `h*128 + 64 + l` in its high nibble), `qh: [u8; 64]` (bits
/// 4-5, laid out like Q2_K's 2-bit array), `scales: [i8; 16]` (sub-blocks of
/// 16), `d: f16`. `y = (d * sc) * (q - 32)`.
fn q6_k(b: &[u8], out: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = f16_at(b, 208);
    for (i, y) in out.iter_mut().enumerate() {
        let (half, rest) = (i / 128, i % 128);
        let low = (ql[half * 64 + rest % 64] >> (4 * (rest / 64))) & 0xF;
        let q = (low | (crumb256(qh, i) << 4)) as i32 - 32;
        let dl = d * (scales[i / 16] as i8) as f32;
        *y = dl * q as f32;
    }
}

/// E2M1 code -> value, doubled (0, 0.5, 1, 1.5, 2, 3, 4, 6 times 2), as in
/// `kvalues_mxfp4`. Code 8 (-0 in E2M1) is +0 here, as in ggml.
const E2M1_DOUBLED: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half the E8M0 scale `2^(e - 127)`, i.e. `2^(e - 128)`, as ggml's
/// `ggml_e8m0_to_fp32_half`: e = 0 and 1 give the subnormals 2^-128 and
/// 2^-127; e = 255 gives 2^127 (not NaN).
fn e8m0_half(e: u8) -> f32 {
    if e < 2 { f32::from_bits(0x0020_0000 << e) } else { f32::from_bits(((e as u32) - 1) << 23) }
}

/// MXFP4 (OCP MX), 32 elements in 17 bytes: `e: u8` (E8M0 exponent, bias 127),
/// `qs: [u8; 16]` (E2M1 codes, nibble order as Q4_0: byte `j` low nibble is
/// element `j`, high nibble element `j + 16`; the OCP/gpt-oss safetensors
/// layout packs elements `2j, 2j+1` in byte `j` instead, a nibble permutation).
/// `y = 2^(e - 128) * (2 * E2M1[code])` = `2^(e - 127) * E2M1[code]`.
fn mxfp4(b: &[u8], out: &mut [f32]) {
    let d = e8m0_half(b[0]);
    let qs = &b[1..17];
    for (j, y) in out.iter_mut().enumerate() {
        *y = d * E2M1_DOUBLED[nibble32(qs, j) as usize] as f32;
    }
}
