//! Fused kernels for GGUF blocks on AVX2 / AVX-512 VNNI: each 32 elements'
//! codes are decoded in a register and dotted at once, with no row decoded
//! to memory first (the generic path in `matmul.rs` does that, for every
//! format and instruction set).
//!
//! A block type says how to read one block ([`XBlock`]): its per-16 scales
//! and offsets (`w = scale * code + offset`), then its codes 32 at a time as
//! u8. Unsigned codes go straight into `vpdpbusd` / `vpmaddubsw` (u8 x i8);
//! offsets are applied through the activation sums. Q8_0's signed codes use
//! the sign trick instead.

use std::arch::x86_64::*;

use ferrum_engine::quant::ggml::GgmlType;

use crate::acts::QuantActs;
use crate::matmul::SharedOut;
use crate::pool::Chunks;
use crate::readers::k_scale_min;
use crate::simd::hsum;

/// Per 16 elements of one block: `w = scale[g] * code + offset[g]`.
#[derive(Clone, Copy)]
pub struct Maps {
    scale: [f32; 16],
    offset: [f32; 16],
}

/// One GGUF block type, read with x86 SIMD.
pub trait XBlock {
    const ELEMS: usize;
    const BYTES: usize;
    /// Codes are signed i8 (Q8_0): dotted with the sign trick, no offsets.
    const SIGNED: bool = false;
    /// The block's maps (`ELEMS / 16` of them).
    unsafe fn maps(blk: *const u8, m: &mut Maps);
    /// A 32-element block's one (scale, offset), without going through memory.
    #[inline(always)]
    unsafe fn scale_offset(blk: *const u8) -> (f32, f32) {
        let mut m = Maps { scale: [0.0; 16], offset: [0.0; 16] };
        unsafe { Self::maps(blk, &mut m) };
        (m.scale[0], m.offset[0])
    }
    /// Codes of elements `32 c .. 32 c + 32`.
    unsafe fn codes(blk: *const u8, c: usize) -> __m256i;
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: p points at 2 readable bytes; F16C is present
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16((p as *const i16).read_unaligned()))) }
}

/// Two f16 at p (a block's d and m) in one conversion.
#[inline(always)]
unsafe fn f16_pair(p: *const u8) -> (f32, f32) {
    // SAFETY: p points at 4 readable bytes; F16C is present
    unsafe {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }
}

/// 16 bytes -> 32 nibbles: low nibbles are elements 0..16, high 16..32.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: 16 readable bytes
    unsafe {
        let raw = _mm_loadu_si128(p as *const __m128i);
        let mask = _mm_set1_epi8(0x0F);
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16::<4>(raw), mask), _mm_and_si128(raw, mask))
    }
}

/// Bit j of `bits` as 0x10 in byte j (the fifth bit of Q5_0/Q5_1 codes).
#[inline(always)]
unsafe fn fifth_bits(bits: u32) -> __m256i {
    // SAFETY: AVX2 present
    unsafe {
        let v = _mm256_set1_epi32(bits as i32);
        let spread =
            _mm256_shuffle_epi8(v, _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
        let select = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }
}

#[inline(always)]
fn fill2(m: &mut Maps, scale: f32, offset: f32) {
    m.scale[..2].fill(scale);
    m.offset[..2].fill(offset);
}

pub struct Q4_0;
pub struct Q4_1;
pub struct Q5_0;
pub struct Q5_1;
pub struct Q8_0;
pub struct Q4K;
pub struct Q5K;
pub struct Q6K;

impl XBlock for Q4_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 18;
    #[inline(always)]
    unsafe fn scale_offset(blk: *const u8) -> (f32, f32) {
        let d = unsafe { f16_at(blk) };
        (d, -8.0 * d)
    }
    #[inline(always)]
    unsafe fn maps(blk: *const u8, m: &mut Maps) {
        let d = unsafe { f16_at(blk) };
        fill2(m, d, -8.0 * d);
    }
    #[inline(always)]
    unsafe fn codes(blk: *const u8, _: usize) -> __m256i {
        unsafe { nibbles(blk.add(2)) }
    }
}

impl XBlock for Q4_1 {
    const ELEMS: usize = 32;
    const BYTES: usize = 20;
    #[inline(always)]
    unsafe fn scale_offset(blk: *const u8) -> (f32, f32) {
        unsafe { f16_pair(blk) }
    }
    #[inline(always)]
    unsafe fn maps(blk: *const u8, m: &mut Maps) {
        unsafe { fill2(m, f16_at(blk), f16_at(blk.add(2))) };
    }
    #[inline(always)]
    unsafe fn codes(blk: *const u8, _: usize) -> __m256i {
        unsafe { nibbles(blk.add(4)) }
    }
}

impl XBlock for Q5_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 22;
    #[inline(always)]
    unsafe fn maps(blk: *const u8, m: &mut Maps) {
        let d = unsafe { f16_at(blk) };
        fill2(m, d, -16.0 * d);
    }
    #[inline(always)]
    unsafe fn codes(blk: *const u8, _: usize) -> __m256i {
        unsafe {
            let qh = (blk.add(2) as *const u32).read_unaligned();
            _mm256_or_si256(nibbles(blk.add(6)), fifth_bits(qh))
        }
    }
}

impl XBlock for Q5_1 {
    const ELEMS: usize = 32;
    const BYTES: usize = 24;
    #[inline(always)]
    unsafe fn scale_offset(blk: *const u8) -> (f32, f32) {
        unsafe { f16_pair(blk) }
    }
    #[inline(always)]
    unsafe fn maps(blk: *const u8, m: &mut Maps) {
        unsafe { fill2(m, f16_at(blk), f16_at(blk.add(2))) };
    }
    #[inline(always)]
    unsafe fn codes(blk: *const u8, _: usize) -> __m256i {
        unsafe {
            let qh = (blk.add(4) as *const u32).read_unaligned();
            _mm256_or_si256(nibbles(blk.add(8)), fifth_bits(qh))
        }
    }
}

impl XBlock for Q8_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 34;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn maps(blk: *const u8, m: &mut Maps) {
        unsafe { fill2(m, f16_at(blk), 0.0) };
    }
    #[inline(always)]
    unsafe fn codes(blk: *const u8, _: usize) -> __m256i {
        unsafe { _mm256_loadu_si256(blk.add(2) as *const __m256i) }
    }
}

#[inline(always)]
unsafe fn k_maps(blk: *const u8, m: &mut Maps) {
    // SAFETY: a Q4_K/Q5_K block holds d, dmin and 12 scale bytes first
    let (d, dmin, sc) = unsafe { (f16_at(blk), f16_at(blk.add(2)), &*(blk.add(4) as *const [u8; 12])) };
    let sc: &[u8] = sc;
    for s in 0..8 {
        let (a, mn) = k_scale_min(sc, s);
        m.scale[2 * s..2 * s + 2].fill(d * a);
        m.offset[2 * s..2 * s + 2].fill(-(dmin * mn));
    }
}

/// Q4_K/Q5_K low nibbles of chunk c: 32 bytes per two chunks, low then high.
#[inline(always)]
unsafe fn k_nibbles(qs: *const u8, c: usize) -> __m256i {
    unsafe {
        let v = _mm256_loadu_si256(qs.add(32 * (c / 2)) as *const __m256i);
        let v = if c % 2 == 1 { _mm256_srli_epi16::<4>(v) } else { v };
        _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
    }
}

impl XBlock for Q4K {
    const ELEMS: usize = 256;
    const BYTES: usize = 144;
    #[inline(always)]
    unsafe fn maps(blk: *const u8, m: &mut Maps) {
        unsafe { k_maps(blk, m) }
    }
    #[inline(always)]
    unsafe fn codes(blk: *const u8, c: usize) -> __m256i {
        unsafe { k_nibbles(blk.add(16), c) }
    }
}

impl XBlock for Q5K {
    const ELEMS: usize = 256;
    const BYTES: usize = 176;
    #[inline(always)]
    unsafe fn maps(blk: *const u8, m: &mut Maps) {
        unsafe { k_maps(blk, m) }
    }
    #[inline(always)]
    unsafe fn codes(blk: *const u8, c: usize) -> __m256i {
        unsafe {
            // bit c of qh byte l is the fifth bit of element 32 c + l
            let qh = _mm256_loadu_si256(blk.add(16) as *const __m256i);
            let high = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(c as i32)), _mm256_set1_epi8(1));
            _mm256_or_si256(k_nibbles(blk.add(48), c), _mm256_slli_epi16::<4>(high))
        }
    }
}

impl XBlock for Q6K {
    const ELEMS: usize = 256;
    const BYTES: usize = 210;
    #[inline(always)]
    unsafe fn maps(blk: *const u8, m: &mut Maps) {
        unsafe {
            let d = f16_at(blk.add(208));
            for g in 0..16 {
                let a = d * (*blk.add(192 + g) as i8) as f32;
                m.scale[g] = a;
                m.offset[g] = -32.0 * a;
            }
        }
    }
    #[inline(always)]
    unsafe fn codes(blk: *const u8, c: usize) -> __m256i {
        unsafe {
            // element 128 h + r: low nibble of ql[64 h + r % 64] (high nibble
            // when r >= 64), bits 4-5 from qh[32 h + r % 32] >> 2 (r / 32)
            let (h, r0) = (c / 4, (c % 4) * 32);
            let ql = _mm256_loadu_si256(blk.add(64 * h + r0 % 64) as *const __m256i);
            let ql = if r0 >= 64 { _mm256_srli_epi16::<4>(ql) } else { ql };
            let low = _mm256_and_si256(ql, _mm256_set1_epi8(0x0F));
            let qh = _mm256_loadu_si256(blk.add(128 + 32 * h) as *const __m256i);
            let high =
                _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128((2 * (c % 4)) as i32)), _mm256_set1_epi8(3));
            _mm256_or_si256(low, _mm256_slli_epi16::<4>(high))
        }
    }
}

pub struct Job<'a> {
    pub data: &'a [u8],
    pub row_bytes: usize,
    pub acts: &'a QuantActs,
    pub bias: Option<&'a [f32]>,
    pub dims: [usize; 3],
    pub rows: Chunks,
    pub out: SharedOut,
}

/// Whether `ty` has a fused kernel here.
pub fn has(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K)
}

/// Runs one thread's share of `job` on weights of type `ty`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C (and AVX-512 VL + VNNI when `vnni`); the
/// job's shapes are consistent (validated by the op).
pub unsafe fn run(ty: GgmlType, vnni: bool, job: &Job) {
    macro_rules! go {
        ($b:ty) => {
            // SAFETY: the caller's contract
            unsafe { if vnni { part_avx512::<$b>(job) } else { part_avx2::<$b>(job) } }
        };
    }
    match ty {
        GgmlType::Q4_0 => go!(Q4_0),
        GgmlType::Q4_1 => go!(Q4_1),
        GgmlType::Q5_0 => go!(Q5_0),
        GgmlType::Q5_1 => go!(Q5_1),
        GgmlType::Q8_0 => go!(Q8_0),
        GgmlType::Q4_K => go!(Q4K),
        GgmlType::Q5_K => go!(Q5K),
        GgmlType::Q6_K => go!(Q6K),
        _ => {}
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn part_avx2<B: XBlock>(job: &Job) {
    // SAFETY: the caller's contract
    unsafe { part::<B, false>(job) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn part_avx512<B: XBlock>(job: &Job) {
    // SAFETY: the caller's contract
    unsafe { part::<B, true>(job) }
}

#[inline(always)]
unsafe fn part<B: XBlock, const VNNI: bool>(job: &Job) {
    let m = job.dims[0];
    // rows a tile pass covers: their bytes stay in L1/L2 while every tile of
    // 4 activation rows goes over them (a batch reads each weight from DRAM once)
    let sub = (32 * 1024 / job.row_bytes.max(1)).max(1);
    while let Some(range) = job.rows.next() {
        for start in range.clone().step_by(sub) {
            let rows = start..(start + sub).min(range.end);
            let mut m0 = 0;
            while m0 < m {
                let left = m - m0;
                // SAFETY: the caller's contract
                unsafe {
                    match left {
                        1 => tile::<B, VNNI, 1>(job, rows.clone(), m0),
                        2 => tile::<B, VNNI, 2>(job, rows.clone(), m0),
                        3 => tile::<B, VNNI, 3>(job, rows.clone(), m0),
                        _ => tile::<B, VNNI, 4>(job, rows.clone(), m0),
                    }
                }
                m0 += left.min(4);
            }
        }
    }
}

/// u8 x i8 products summed per 4 bytes into 8 i32 lanes.
#[inline(always)]
unsafe fn dot_u8<const VNNI: bool>(u: __m256i, x: __m256i) -> __m256i {
    // SAFETY: the caller's target features
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1))
        }
    }
}

#[inline(always)]
unsafe fn tile<B: XBlock, const VNNI: bool, const MT: usize>(job: &Job, rows: std::ops::Range<usize>, m0: usize) {
    let [_, k, n] = job.dims;
    let (chunks, blocks) = (k / 32, k / B::ELEMS);
    let per = B::ELEMS / 32;
    let acts = job.acts;
    let mut maps = Maps { scale: [0.0; 16], offset: [0.0; 16] };
    // SAFETY: every pointer stays inside a row of `rows` (k / ELEMS blocks of
    // BYTES) or an activation row of m0..m0 + MT (shapes validated)
    unsafe {
        for row in rows {
            let w = job.data.as_ptr().add(row * job.row_bytes);
            // two sets of partial sums (even and odd chunks of k) so that
            // consecutive FMA chains overlap instead of waiting on each other
            let mut acc = [[_mm256_setzero_ps(); 2]; MT];
            let mut offset = [_mm256_setzero_ps(); MT];
            let mut offset32 = [[0.0f32; 2]; MT];
            for b in 0..blocks {
                let blk = w.add(b * B::BYTES);
                // the bytes ahead, for the hardware prefetcher
                _mm_prefetch::<_MM_HINT_T0>(blk.add(1024) as *const i8);
                if B::ELEMS == 32 {
                    // one scale and offset per block, kept in registers
                    let (d, o) = B::scale_offset(blk);
                    let codes = B::codes(blk, 0);
                    let u = if B::SIGNED { _mm256_sign_epi8(codes, codes) } else { codes };
                    for t in 0..MT {
                        let r = m0 + t;
                        let mut x = _mm256_loadu_si256(acts.q.as_ptr().add(r * k + b * 32) as *const __m256i);
                        if B::SIGNED {
                            x = _mm256_sign_epi8(x, codes);
                        }
                        let dx = *acts.d.get_unchecked(r * chunks + b);
                        let dots = _mm256_cvtepi32_ps(dot_u8::<VNNI>(u, x));
                        acc[t][b & 1] = _mm256_fmadd_ps(dots, _mm256_set1_ps(d * dx), acc[t][b & 1]);
                        if !B::SIGNED {
                            offset32[t][b & 1] += o * *acts.sums32.get_unchecked(r * chunks + b);
                        }
                    }
                    continue;
                }
                B::maps(blk, &mut maps);
                for c in 0..per {
                    let kc = b * per + c; // chunk of 32 along k
                    let codes = B::codes(blk, c);
                    let u = if B::SIGNED { _mm256_sign_epi8(codes, codes) } else { codes };
                    let s = _mm256_set_m128(_mm_set1_ps(maps.scale[2 * c + 1]), _mm_set1_ps(maps.scale[2 * c]));
                    for t in 0..MT {
                        let r = m0 + t;
                        let mut x = _mm256_loadu_si256(acts.q.as_ptr().add(r * k + kc * 32) as *const __m256i);
                        if B::SIGNED {
                            x = _mm256_sign_epi8(x, codes);
                        }
                        let dx = _mm256_set1_ps(*acts.d.get_unchecked(r * chunks + kc));
                        let dots = _mm256_cvtepi32_ps(dot_u8::<VNNI>(u, x));
                        acc[t][kc & 1] = _mm256_fmadd_ps(dots, _mm256_mul_ps(s, dx), acc[t][kc & 1]);
                    }
                }
                if !B::SIGNED {
                    // offsets times the activations' per-16 sums
                    for t in 0..MT {
                        let sums = acts.sums.as_ptr().add((m0 + t) * k / 16 + b * B::ELEMS / 16);
                        for g in (0..B::ELEMS / 16).step_by(8) {
                            let o = _mm256_loadu_ps(maps.offset.as_ptr().add(g));
                            offset[t] = _mm256_fmadd_ps(o, _mm256_loadu_ps(sums.add(g)), offset[t]);
                        }
                    }
                }
            }
            for t in 0..MT {
                let r = m0 + t;
                let mut v = hsum(_mm256_add_ps(_mm256_add_ps(acc[t][0], acc[t][1]), offset[t]))
                    + offset32[t][0]
                    + offset32[t][1];
                if let Some(bias) = job.bias {
                    v += bias[row];
                }
                *job.out.at(r * n + row) = v;
            }
        }
    }
}
