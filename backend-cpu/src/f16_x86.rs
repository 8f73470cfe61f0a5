//! matmul on f16 weights for decode-sized batches (up to 4 activation rows)
//! on AVX2 + F16C: 8 weights at a time converted in a register (`vcvtph2ps`)
//! and multiplied in, 4 weight rows at once so the FMA chains overlap. Larger
//! batches convert a chunk of rows to f32 once instead (`matmul.rs`).

use std::arch::x86_64::*;

use crate::matmul::SharedOut;
use crate::pool::Chunks;
use crate::simd::hsum;

pub struct Job<'a> {
    pub w: &'a [half::f16],
    pub x: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub dims: [usize; 3],
    /// groups of 4 weight rows
    pub quads: Chunks,
    pub out: SharedOut,
}

/// One thread's share.
///
/// # Safety
/// AVX2, FMA and F16C present; m <= 4, n a multiple of 4, shapes validated.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn part(job: &Job) {
    let m = job.dims[0];
    while let Some(quads) = job.quads.next() {
        for g in quads {
            // SAFETY: the caller's contract
            unsafe {
                match m {
                    1 => quad::<1>(job, g),
                    2 => quad::<2>(job, g),
                    3 => quad::<3>(job, g),
                    _ => quad::<4>(job, g),
                }
            }
        }
    }
}

/// Weight rows 4g..4g+4 against all MT activation rows.
#[inline(always)]
unsafe fn quad<const MT: usize>(job: &Job, g: usize) {
    let [_, k, n] = job.dims;
    let steps = k / 8;
    // SAFETY: rows 4g..4g+4 and the MT activation rows hold k values; the
    // outputs (t, 4g..4g+4) belong to this thread
    unsafe {
        let w = job.w.as_ptr().add(4 * g * k) as *const u16;
        let mut acc = [[_mm256_setzero_ps(); 4]; MT];
        for c in 0..steps {
            if c % 4 == 0 {
                // the next 4 rows, one cache line per row per 64 bytes read here
                for r in 0..4 {
                    _mm_prefetch::<_MM_HINT_T0>(w.add(4 * k + r * k + 8 * c) as *const i8);
                }
            }
            let wv: [__m256; 4] =
                std::array::from_fn(|r| _mm256_cvtph_ps(_mm_loadu_si128(w.add(r * k + 8 * c) as *const __m128i)));
            for t in 0..MT {
                let x = _mm256_loadu_ps(job.x.as_ptr().add(t * k + 8 * c));
                for r in 0..4 {
                    acc[t][r] = _mm256_fmadd_ps(wv[r], x, acc[t][r]);
                }
            }
        }
        for t in 0..MT {
            for r in 0..4 {
                let row = 4 * g + r;
                let tail: f32 = (8 * steps..k).map(|j| job.w[row * k + j].to_f32() * job.x[t * k + j]).sum();
                let mut v = hsum(acc[t][r]) + tail;
                if let Some(b) = job.bias {
                    v += b[row];
                }
                *job.out.at(t * n + row) = v;
            }
        }
    }
}
