//! The few vector primitives the kernels are written over, one impl per
//! instruction set. Kernel bodies are generic over [`Simd`] and marked
//! `#[inline(always)]`; each instruction set instantiates them inside one
//! `#[target_feature]` entry, so the intrinsics inline there.

/// 8 f32 lanes of partial sums, and the dot products that fill them.
pub trait Simd {
    type Acc: Copy;

    /// Zeroed lanes.
    fn zero() -> Self::Acc;

    /// `acc + lanes(dot(q, x) per 4 bytes) * scale8 * dx` for 32 i8 codes
    /// `q` and 32 i8 activations `x` (|x| <= 127): lanes 0-3 hold elements
    /// 0-15, lanes 4-7 elements 16-31, so `scale8` carries one scale per 16.
    ///
    /// # Safety
    /// `q`, `x` point at 32 readable bytes, `scale8` at 8 f32; the CPU has the
    /// instruction set.
    unsafe fn qdot32(acc: Self::Acc, q: *const i8, x: *const i8, scale8: *const f32, dx: f32) -> Self::Acc;

    /// `acc + a[0..8] * b[0..8]` lane by lane.
    ///
    /// # Safety
    /// `a`, `b` point at 8 readable f32; the CPU has the instruction set.
    unsafe fn fma8(acc: Self::Acc, a: *const f32, b: *const f32) -> Self::Acc;

    /// The sum of the lanes.
    fn sum(acc: Self::Acc) -> f32;
}

/// Plain Rust: the same arithmetic lane by lane.
pub struct Portable;

impl Simd for Portable {
    type Acc = [f32; 8];

    #[inline(always)]
    fn zero() -> [f32; 8] {
        [0.0; 8]
    }

    #[inline(always)]
    unsafe fn qdot32(mut acc: [f32; 8], q: *const i8, x: *const i8, scale8: *const f32, dx: f32) -> [f32; 8] {
        // SAFETY: the caller's contract
        let (q, x, s) = unsafe {
            (
                std::slice::from_raw_parts(q, 32),
                std::slice::from_raw_parts(x, 32),
                std::slice::from_raw_parts(scale8, 8),
            )
        };
        for l in 0..8 {
            let d: i32 = (0..4).map(|i| q[4 * l + i] as i32 * x[4 * l + i] as i32).sum();
            acc[l] += d as f32 * (s[l] * dx);
        }
        acc
    }

    #[inline(always)]
    unsafe fn fma8(mut acc: [f32; 8], a: *const f32, b: *const f32) -> [f32; 8] {
        for l in 0..8 {
            // SAFETY: the caller's contract
            unsafe { acc[l] += *a.add(l) * *b.add(l) };
        }
        acc
    }

    #[inline(always)]
    fn sum(acc: [f32; 8]) -> f32 {
        acc.iter().sum()
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512, hsum};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Simd;

    /// AVX2 + FMA: `vpmaddubsw` over |q| and x signed like q (llama.cpp's
    /// trick: u8 x i8 pairs never saturate, |q| <= 128 and |x| <= 127).
    pub struct Avx2;

    /// AVX-512 VNNI on 256-bit vectors: `vpdpbusd` sums 4 u8 x i8 products
    /// into each i32 lane in one instruction.
    pub struct Avx512;

    /// The sum of 8 lanes.
    ///
    /// # Safety
    /// AVX present.
    #[inline(always)]
    pub unsafe fn hsum(acc: __m256) -> f32 {
        // SAFETY: the caller's contract (AVX present)
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }

    #[inline(always)]
    unsafe fn scaled(acc: __m256, dots: __m256i, scale8: *const f32, dx: f32) -> __m256 {
        // SAFETY: the caller's contract
        unsafe {
            let s = _mm256_mul_ps(_mm256_loadu_ps(scale8), _mm256_set1_ps(dx));
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), s, acc)
        }
    }

    impl Simd for Avx2 {
        type Acc = __m256;

        #[inline(always)]
        fn zero() -> __m256 {
            // SAFETY: AVX is present wherever this impl is instantiated
            unsafe { _mm256_setzero_ps() }
        }

        #[inline(always)]
        unsafe fn qdot32(acc: __m256, q: *const i8, x: *const i8, scale8: *const f32, dx: f32) -> __m256 {
            // SAFETY: the caller's contract
            unsafe {
                let q = _mm256_loadu_si256(q as *const __m256i);
                let x = _mm256_loadu_si256(x as *const __m256i);
                let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q));
                scaled(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)), scale8, dx)
            }
        }

        #[inline(always)]
        unsafe fn fma8(acc: __m256, a: *const f32, b: *const f32) -> __m256 {
            // SAFETY: the caller's contract
            unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(b), acc) }
        }

        #[inline(always)]
        fn sum(acc: __m256) -> f32 {
            // SAFETY: AVX is present wherever this impl is instantiated
            unsafe { hsum(acc) }
        }
    }

    impl Simd for Avx512 {
        type Acc = __m256;

        #[inline(always)]
        fn zero() -> __m256 {
            Avx2::zero()
        }

        #[inline(always)]
        unsafe fn qdot32(acc: __m256, q: *const i8, x: *const i8, scale8: *const f32, dx: f32) -> __m256 {
            // SAFETY: the caller's contract
            unsafe {
                let q = _mm256_loadu_si256(q as *const __m256i);
                let x = _mm256_loadu_si256(x as *const __m256i);
                let dots = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q));
                scaled(acc, dots, scale8, dx)
            }
        }

        #[inline(always)]
        unsafe fn fma8(acc: __m256, a: *const f32, b: *const f32) -> __m256 {
            // SAFETY: the caller's contract
            unsafe { Avx2::fma8(acc, a, b) }
        }

        #[inline(always)]
        fn sum(acc: __m256) -> f32 {
            Avx2::sum(acc)
        }
    }
}
