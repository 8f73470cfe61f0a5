//! Weight readers for the integer kernels: each quantized format decodes a
//! row into i8 codes `q` and, per 16 elements g, an affine map
//! `w = a[g] * q + b[g]`. The kernel's dot product is then the same for every
//! format: `sum_g a[g] dx (q . xq)_g + b[g] (dx sum xq)_g` over activations
//! quantized to i8 (`acts.rs`). One small decoder per format family; the
//! layouts are those `ferrum_engine::quant` documents and dequantizes.

use ferrum_engine::quant::ggml::GgmlBlocks;
use ferrum_engine::quant::{Int4, Int8, Mxfp4, Nvfp4, QuantMatrix, e2m1, mxfp4};
use half::f16;

/// A weight matrix's rows as i8 codes with per-16 affine maps.
pub trait Reader: Sync {
    /// Whether some `b` may be nonzero (else the kernel skips that sum).
    const AFFINE: bool;

    /// Row `r`: `q[..k]`, `a[..k / 16]`, `b[..k / 16]`.
    fn decode_row(&self, r: usize, q: &mut [i8], a: &mut [f32], b: &mut [f32]);
}

/// E2M1 code -> value times 2, exactly an integer (0, 1, 2, 3, 4, 6, 8, 12).
const E2M1_X2: [i8; 16] = {
    let mut t = [0i8; 16];
    let mut c = 0;
    while c < 16 {
        t[c] = (e2m1::E2M1_VALUES[c] * 2.0) as i8;
        c += 1;
    }
    t
};

/// One GGUF block type: `ELEMS` elements in `BYTES` bytes.
pub trait Block: Sync {
    const ELEMS: usize;
    const BYTES: usize;
    const AFFINE: bool;
    fn decode(blk: &[u8], q: &mut [i8], a: &mut [f32], b: &mut [f32]);
}

/// Rows of GGUF blocks, read in place from the file's bytes.
pub struct Ggml<'a, B> {
    data: &'a [u8],
    row_bytes: usize,
    _block: std::marker::PhantomData<B>,
}

impl<'a, B: Block> Ggml<'a, B> {
    pub fn new(m: &'a GgmlBlocks) -> Self {
        Ggml { data: m.data(), row_bytes: m.row_bytes(), _block: std::marker::PhantomData }
    }
}

impl<B: Block> Reader for Ggml<'_, B> {
    const AFFINE: bool = B::AFFINE;

    #[inline(always)]
    fn decode_row(&self, r: usize, q: &mut [i8], a: &mut [f32], b: &mut [f32]) {
        let row = &self.data[r * self.row_bytes..(r + 1) * self.row_bytes];
        let g = B::ELEMS / 16;
        for (i, blk) in row.chunks_exact(B::BYTES).enumerate() {
            B::decode(
                blk,
                &mut q[i * B::ELEMS..(i + 1) * B::ELEMS],
                &mut a[i * g..(i + 1) * g],
                &mut b[i * g..(i + 1) * g],
            );
        }
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// The 32-element formats' nibbles: byte j holds element j (low) and j + 16.
#[inline(always)]
fn nibbles32(qs: &[u8], q: &mut [i8], minus: i8) {
    for j in 0..16 {
        q[j] = (qs[j] & 0xF) as i8 - minus;
        q[j + 16] = (qs[j] >> 4) as i8 - minus;
    }
}

/// Bit 4 of element j is bit j of `qh`.
#[inline(always)]
fn high_bits32(qh: u32, q: &mut [i8]) {
    for (j, v) in q.iter_mut().enumerate().take(32) {
        *v |= (((qh >> j) & 1) << 4) as i8;
    }
}

pub struct Q4_0;
pub struct Q4_1;
pub struct Q5_0;
pub struct Q5_1;
pub struct Q8_0;
pub struct Q2K;
pub struct Q3K;
pub struct Q4K;
pub struct Q5K;
pub struct Q6K;

impl Block for Q4_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 18;
    const AFFINE: bool = false;
    #[inline(always)]
    fn decode(blk: &[u8], q: &mut [i8], a: &mut [f32], _: &mut [f32]) {
        a[..2].fill(f16_at(blk, 0));
        nibbles32(&blk[2..18], q, 8);
    }
}

impl Block for Q4_1 {
    const ELEMS: usize = 32;
    const BYTES: usize = 20;
    const AFFINE: bool = true;
    #[inline(always)]
    fn decode(blk: &[u8], q: &mut [i8], a: &mut [f32], b: &mut [f32]) {
        a[..2].fill(f16_at(blk, 0));
        b[..2].fill(f16_at(blk, 2));
        nibbles32(&blk[4..20], q, 0);
    }
}

impl Block for Q5_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 22;
    const AFFINE: bool = false;
    #[inline(always)]
    fn decode(blk: &[u8], q: &mut [i8], a: &mut [f32], _: &mut [f32]) {
        a[..2].fill(f16_at(blk, 0));
        nibbles32(&blk[6..22], q, 0);
        high_bits32(u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]), q);
        for v in q[..32].iter_mut() {
            *v -= 16;
        }
    }
}

impl Block for Q5_1 {
    const ELEMS: usize = 32;
    const BYTES: usize = 24;
    const AFFINE: bool = true;
    #[inline(always)]
    fn decode(blk: &[u8], q: &mut [i8], a: &mut [f32], b: &mut [f32]) {
        a[..2].fill(f16_at(blk, 0));
        b[..2].fill(f16_at(blk, 2));
        nibbles32(&blk[8..24], q, 0);
        high_bits32(u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]), q);
    }
}

impl Block for Q8_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 34;
    const AFFINE: bool = false;
    #[inline(always)]
    fn decode(blk: &[u8], q: &mut [i8], a: &mut [f32], _: &mut [f32]) {
        a[..2].fill(f16_at(blk, 0));
        q[..32].copy_from_slice(bytemuck::cast_slice(&blk[2..34]));
    }
}

/// A 64-byte 2-bit array over 256 elements: in half h, byte h*32 + l holds
/// elements h*128 + l + 32 s in bits 2s..2s+2.
#[inline(always)]
fn crumbs256(qs: &[u8], q: &mut [i8]) {
    for h in 0..2 {
        for s in 0..4 {
            for l in 0..32 {
                q[h * 128 + s * 32 + l] = ((qs[h * 32 + l] >> (2 * s)) & 3) as i8;
            }
        }
    }
}

/// A 32-byte bit mask over 256 elements: bit i / 32 of byte i % 32.
#[inline(always)]
fn mask_bits256(mask: &[u8], q: &mut [i8], f: impl Fn(i8, u8) -> i8) {
    for s in 0..8 {
        for l in 0..32 {
            let v = &mut q[s * 32 + l];
            *v = f(*v, (mask[l] >> s) & 1);
        }
    }
}

/// A 128-byte nibble array over 256 elements: in chunk c, byte c*32 + l
/// holds element c*64 + l (low) and c*64 + 32 + l (high).
#[inline(always)]
fn nibbles256(qs: &[u8], q: &mut [i8]) {
    for c in 0..4 {
        for l in 0..32 {
            let byte = qs[c * 32 + l];
            q[c * 64 + l] = (byte & 0xF) as i8;
            q[c * 64 + 32 + l] = (byte >> 4) as i8;
        }
    }
}

/// Q4_K/Q5_K's 6-bit (scale, min) of sub-block s (0..8).
#[inline(always)]
pub(crate) fn k_scale_min(sc: &[u8], s: usize) -> (f32, f32) {
    let (a, m) = if s < 4 {
        (sc[s] & 63, sc[s + 4] & 63)
    } else {
        ((sc[s + 4] & 0xF) | ((sc[s - 4] >> 6) << 4), (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4))
    };
    (a as f32, m as f32)
}

/// Per 32-element sub-block scale and min, as two equal per-16 maps.
#[inline(always)]
fn k_maps(blk: &[u8], a: &mut [f32], b: &mut [f32]) {
    let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
    for s in 0..8 {
        let (sc, m) = k_scale_min(&blk[4..16], s);
        a[2 * s..2 * s + 2].fill(d * sc);
        b[2 * s..2 * s + 2].fill(-(dmin * m));
    }
}

impl Block for Q2K {
    const ELEMS: usize = 256;
    const BYTES: usize = 84;
    const AFFINE: bool = true;
    #[inline(always)]
    fn decode(blk: &[u8], q: &mut [i8], a: &mut [f32], b: &mut [f32]) {
        let (d, dmin) = (f16_at(blk, 80), f16_at(blk, 82));
        for g in 0..16 {
            let s = blk[g];
            a[g] = d * (s & 0xF) as f32;
            b[g] = -(dmin * (s >> 4) as f32);
        }
        crumbs256(&blk[16..80], q);
    }
}

impl Block for Q3K {
    const ELEMS: usize = 256;
    const BYTES: usize = 110;
    const AFFINE: bool = false;
    #[inline(always)]
    fn decode(blk: &[u8], q: &mut [i8], a: &mut [f32], _: &mut [f32]) {
        let sc = &blk[96..108];
        let d = f16_at(blk, 108);
        for g in 0..16 {
            let low = if g < 8 { sc[g] & 0xF } else { sc[g - 8] >> 4 };
            let high = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
            a[g] = d * ((low | (high << 4)) as i32 - 32) as f32;
        }
        crumbs256(&blk[32..96], q);
        mask_bits256(&blk[0..32], q, |v, high| v - 4 * (1 - high as i8));
    }
}

impl Block for Q4K {
    const ELEMS: usize = 256;
    const BYTES: usize = 144;
    const AFFINE: bool = true;
    #[inline(always)]
    fn decode(blk: &[u8], q: &mut [i8], a: &mut [f32], b: &mut [f32]) {
        k_maps(blk, a, b);
        nibbles256(&blk[16..144], q);
    }
}

impl Block for Q5K {
    const ELEMS: usize = 256;
    const BYTES: usize = 176;
    const AFFINE: bool = true;
    #[inline(always)]
    fn decode(blk: &[u8], q: &mut [i8], a: &mut [f32], b: &mut [f32]) {
        k_maps(blk, a, b);
        nibbles256(&blk[48..176], q);
        mask_bits256(&blk[16..48], q, |v, high| v | (high << 4) as i8);
    }
}

impl Block for Q6K {
    const ELEMS: usize = 256;
    const BYTES: usize = 210;
    const AFFINE: bool = false;
    #[inline(always)]
    fn decode(blk: &[u8], q: &mut [i8], a: &mut [f32], _: &mut [f32]) {
        let d = f16_at(blk, 208);
        for g in 0..16 {
            a[g] = d * (blk[192 + g] as i8) as f32;
        }
        crumbs256(&blk[128..192], q); // bits 4-5
        let ql = &blk[0..128];
        for h in 0..2 {
            for s in 0..2 {
                for l in 0..64 {
                    let v = &mut q[h * 128 + s * 64 + l];
                    *v = (((ql[h * 64 + l] >> (4 * s)) & 0xF) as i8 | (*v << 4)) - 32;
                }
            }
        }
    }
}

/// INT8: one f32 scale per row.
pub struct Int8Rows<'a>(pub &'a Int8);

impl Reader for Int8Rows<'_> {
    const AFFINE: bool = false;
    #[inline(always)]
    fn decode_row(&self, r: usize, q: &mut [i8], a: &mut [f32], _: &mut [f32]) {
        let k = self.0.cols();
        q[..k].copy_from_slice(&self.0.data()[r * k..(r + 1) * k]);
        a[..k / 16].fill(self.0.scales()[r]);
    }
}

/// Element 2j in the low nibble of byte j, 2j + 1 in the high.
#[inline(always)]
fn nibble_pairs(packed: &[u8], q: &mut [i8], f: impl Fn(u8) -> i8) {
    for (j, &byte) in packed.iter().enumerate() {
        q[2 * j] = f(byte & 0xF);
        q[2 * j + 1] = f(byte >> 4);
    }
}

/// INT4: `(q - 8 - zp) * s` per group of a multiple of 16.
pub struct Int4Rows<'a>(pub &'a Int4);

impl Reader for Int4Rows<'_> {
    const AFFINE: bool = true;
    #[inline(always)]
    fn decode_row(&self, r: usize, q: &mut [i8], a: &mut [f32], b: &mut [f32]) {
        let m = self.0;
        let (k, group) = (m.cols(), m.group());
        nibble_pairs(&m.packed()[r * k / 2..(r + 1) * k / 2], q, |c| c as i8 - 8);
        let groups = k / group;
        for g in 0..k / 16 {
            let gi = r * groups + g * 16 / group;
            let s = m.scales()[gi];
            a[g] = s;
            b[g] = -(m.zero_points().map_or(0.0, |z| z[gi] as f32) * s);
        }
    }
}

/// NVFP4: doubled E2M1 codes, half the block factor per 16.
pub struct Nvfp4Rows<'a>(pub &'a Nvfp4);

impl Reader for Nvfp4Rows<'_> {
    const AFFINE: bool = false;
    #[inline(always)]
    fn decode_row(&self, r: usize, q: &mut [i8], a: &mut [f32], _: &mut [f32]) {
        let m = self.0;
        let k = m.cols();
        nibble_pairs(&m.packed()[r * k / 2..(r + 1) * k / 2], q, |c| E2M1_X2[c as usize]);
        for g in 0..k / 16 {
            a[g] = m.block_factor(r * (k / 16) + g) * 0.5;
        }
    }
}

/// MXFP4: doubled E2M1 codes, half the E8M0 scale per 32.
pub struct Mxfp4Rows<'a>(pub &'a Mxfp4);

impl Reader for Mxfp4Rows<'_> {
    const AFFINE: bool = false;
    #[inline(always)]
    fn decode_row(&self, r: usize, q: &mut [i8], a: &mut [f32], _: &mut [f32]) {
        let m = self.0;
        let k = m.cols();
        nibble_pairs(&m.packed()[r * k / 2..(r + 1) * k / 2], q, |c| E2M1_X2[c as usize]);
        for (g, &e) in m.scales()[r * k / 32..(r + 1) * k / 32].iter().enumerate() {
            a[2 * g..2 * g + 2].fill(mxfp4::e8m0_to_f32(e) * 0.5);
        }
    }
}
