//! Fused kernels for the 32-element GGUF blocks SmolLM-class files are made
//! of (Q4_0, Q4_1, Q8_0) on AVX2 / AVX-512 VNNI: each block's codes are
//! decoded in a register and dotted at once, with no row decoded to memory
//! first (the generic path in `matmul.rs` does that for every format).
//!
//! 4-bit codes stay unsigned (0..15): `vpdpbusd` / `vpmaddubsw` take u8 x
//! i8 directly, and the offset (-8 d or the block's min) is applied through
//! the activation sums. Q8_0 uses the sign trick, as the generic path does.

use std::arch::x86_64::*;

use ferrum_engine::quant::ggml::GgmlType;

use crate::acts::QuantActs;
use crate::matmul::SharedOut;
use crate::pool::Chunks;

/// Which block type, as a const parameter.
pub const Q4_0: u8 = 0;
pub const Q4_1: u8 = 1;
pub const Q8_0: u8 = 2;

pub fn kind(ty: GgmlType) -> Option<u8> {
    match ty {
        GgmlType::Q4_0 => Some(Q4_0),
        GgmlType::Q4_1 => Some(Q4_1),
        GgmlType::Q8_0 => Some(Q8_0),
        _ => None,
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

/// # Safety
/// The CPU has AVX2, FMA and F16C; the job's shapes are consistent.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn part_avx2<const T: u8>(job: &Job) {
    // SAFETY: the caller's contract
    unsafe { part::<T, false>(job) }
}

/// # Safety
/// As `part_avx2`, plus AVX-512 VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn part_avx512<const T: u8>(job: &Job) {
    // SAFETY: the caller's contract
    unsafe { part::<T, true>(job) }
}

#[inline(always)]
unsafe fn part<const T: u8, const VNNI: bool>(job: &Job) {
    let m = job.dims[0];
    while let Some(rows) = job.rows.next() {
        let mut m0 = 0;
        while m0 < m {
            let left = m - m0;
            // SAFETY: the caller's contract
            unsafe {
                match left {
                    1 => tile::<T, VNNI, 1>(job, rows.clone(), m0),
                    2 => tile::<T, VNNI, 2>(job, rows.clone(), m0),
                    3 => tile::<T, VNNI, 3>(job, rows.clone(), m0),
                    _ => tile::<T, VNNI, 4>(job, rows.clone(), m0),
                }
            }
            m0 += left.min(4);
        }
    }
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: p points at 2 readable bytes; F16C is present
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16((p as *const i16).read_unaligned()))) }
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
unsafe fn hsum(acc: __m256) -> f32 {
    // SAFETY: AVX present
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

#[inline(always)]
unsafe fn tile<const T: u8, const VNNI: bool, const MT: usize>(job: &Job, rows: std::ops::Range<usize>, m0: usize) {
    let [_, k, n] = job.dims;
    let blocks = k / 32;
    let acts = job.acts;
    let block_bytes = match T {
        Q4_0 => 18,
        Q4_1 => 20,
        _ => 34,
    };
    // SAFETY: every pointer below stays inside a row of `rows` (k / 32 blocks
    // of `block_bytes`) or an activation row of m0..m0 + MT (validated shapes)
    unsafe {
        let mask = _mm_set1_epi8(0x0F);
        for row in rows {
            let w = job.data.as_ptr().add(row * job.row_bytes);
            // two sets of partial sums (even and odd blocks): the FMA chains
            // then overlap instead of waiting on each other
            let mut acc = [[_mm256_setzero_ps(); 2]; MT];
            let mut offset = [[0.0f32; 2]; MT];
            for b in 0..blocks {
                let blk = w.add(b * block_bytes);
                // the next rows' bytes, ahead of the hardware prefetcher
                _mm_prefetch::<_MM_HINT_T0>(blk.add(1024) as *const i8);
                let d = f16_at(blk);
                let codes = match T {
                    Q8_0 => _mm256_loadu_si256(blk.add(2) as *const __m256i),
                    _ => {
                        let raw = _mm_loadu_si128(blk.add(if T == Q4_0 { 2 } else { 4 }) as *const __m128i);
                        let lo = _mm_and_si128(raw, mask);
                        let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), mask);
                        _mm256_set_m128i(hi, lo)
                    }
                };
                let (u, sign) = match T {
                    Q8_0 => (_mm256_sign_epi8(codes, codes), Some(codes)),
                    _ => (codes, None),
                };
                let c = match T {
                    Q4_0 => -8.0 * d,
                    Q4_1 => f16_at(blk.add(2)),
                    _ => 0.0,
                };
                let h = b & 1;
                for t in 0..MT {
                    let r = m0 + t;
                    let mut x = _mm256_loadu_si256(acts.q.as_ptr().add(r * k + b * 32) as *const __m256i);
                    if let Some(s) = sign {
                        x = _mm256_sign_epi8(x, s);
                    }
                    let dx = *acts.d.get_unchecked(r * blocks + b);
                    let dots = _mm256_cvtepi32_ps(dot_u8::<VNNI>(u, x));
                    acc[t][h] = _mm256_fmadd_ps(dots, _mm256_set1_ps(d * dx), acc[t][h]);
                    if T != Q8_0 {
                        let s = acts.sums.as_ptr().add(r * k / 16 + 2 * b);
                        offset[t][h] += c * (*s + *s.add(1));
                    }
                }
            }
            for t in 0..MT {
                let r = m0 + t;
                let mut v = hsum(_mm256_add_ps(acc[t][0], acc[t][1])) + (offset[t][0] + offset[t][1]);
                if let Some(bias) = job.bias {
                    v += bias[row];
                }
                *job.out.at(r * n + row) = v;
            }
        }
    }
}
