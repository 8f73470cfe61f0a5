//! matmul on weights repacked 8 rows at a time (`repack.rs`), on AVX2 /
//! AVX-512 VNNI: per block of 32 along k, the 8 rows' codes sit in 4 (Q4) or
//! 8 (Q8) registers of 4 bytes per row; each is dotted with 4 activations
//! broadcast to every lane, so the i32 lanes end up holding the 8 rows' dots.
//! Scales come as 8 f16 converted at once; nothing is summed across lanes.
//! MXFP4 and NVFP4 take Q4's path with their codes mapped through a table
//! (NVFP4 scales each half of a block by its own scale).

use std::arch::x86_64::*;

use ferrum_engine::quant::ggml::GgmlType;

use crate::acts::QuantActs;
use crate::matmul::SharedOut;
use crate::pool::Chunks;
use crate::repack::{Kind, Repacked};

pub struct Job<'a> {
    pub w: &'a Repacked,
    /// the first group of 8 rows this product reads (an expert's, in a stack)
    pub group0: usize,
    pub acts: &'a QuantActs,
    pub bias: Option<&'a [f32]>,
    pub dims: [usize; 3],
    /// groups of 8 weight rows
    pub groups: Chunks,
    pub out: SharedOut,
}

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;
const Q5_0: u8 = 3;
/// MXFP4 in Q4_0's layout, its codes through `FP4_TABLE` (`repack.rs`)
const MX4: u8 = 4;
/// NVFP4: the same codes, a `d` for each half of the block
const NV4: u8 = 5;

/// E2M1 code -> twice its value plus 12 (0..24): `w = d (t[code] - 12)`.
const FP4_TABLE: [i8; 16] = [12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0];

/// One thread's share of `job`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C (and AVX-512 VL + VNNI when `vnni`);
/// shapes were validated and the weight is `job.w`'s [n, k].
pub unsafe fn run(vnni: bool, job: &Job) {
    macro_rules! go {
        ($t:expr) => {
            // SAFETY: the caller's contract
            unsafe { if vnni { part_avx512::<{ $t }>(job) } else { part_avx2::<{ $t }>(job) } }
        };
    }
    match job.w.kind {
        Kind::Ggml(GgmlType::Q4_0) => go!(Q4_0),
        Kind::Ggml(GgmlType::Q4_1) => go!(Q4_1),
        Kind::Ggml(GgmlType::Q8_0) => go!(Q8_0),
        Kind::Ggml(GgmlType::Q5_0) => go!(Q5_0),
        Kind::Mxfp4 => go!(MX4),
        Kind::Nvfp4(_) => go!(NV4),
        Kind::Ggml(_) => {}
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn part_avx2<const T: u8>(job: &Job) {
    // SAFETY: the caller's contract
    unsafe { part::<T, false>(job) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn part_avx512<const T: u8>(job: &Job) {
    // SAFETY: the caller's contract
    unsafe { part::<T, true>(job) }
}

#[inline(always)]
unsafe fn part<const T: u8, const VNNI: bool>(job: &Job) {
    let [m, k, _] = job.dims;
    let gb = job.w.kind.group_block_bytes() * (k / 32);
    // groups a tile pass covers: their bytes stay in cache while every tile
    // of 4 activation rows goes over them
    let sub = (48 * 1024 / gb).max(1);
    while let Some(range) = job.groups.next() {
        for start in range.clone().step_by(sub) {
            let groups = start..(start + sub).min(range.end);
            let mut m0 = 0;
            while m0 < m {
                let left = m - m0;
                for g in groups.clone() {
                    // SAFETY: the caller's contract
                    unsafe {
                        match left {
                            1 => tile::<T, VNNI, 1>(job, g, m0),
                            2 => tile::<T, VNNI, 2>(job, g, m0),
                            3 => tile::<T, VNNI, 3>(job, g, m0),
                            _ => tile::<T, VNNI, 4>(job, g, m0),
                        }
                    }
                }
                m0 += left.min(4);
            }
        }
    }
}

/// `acc + (u . x)` per 4 bytes, u unsigned, x signed.
#[inline(always)]
unsafe fn dp<const VNNI: bool>(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
    // SAFETY: the caller's target features
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(acc, u, x)
        } else {
            _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)))
        }
    }
}

/// The 4 low bits of each i32 lane as 0x10 in its 4 bytes (bit i -> byte i):
/// `t * 0x00204081` puts bit i at bit 8i, the mask keeps those.
#[inline(always)]
unsafe fn fifth_bits(t: __m256i) -> __m256i {
    // SAFETY: AVX2 present
    unsafe {
        let spread =
            _mm256_and_si256(_mm256_mullo_epi32(t, _mm256_set1_epi32(0x0020_4081)), _mm256_set1_epi32(0x0101_0101));
        _mm256_slli_epi32::<4>(spread)
    }
}

#[inline(always)]
unsafe fn bcast(p: *const i8) -> __m256i {
    // SAFETY: 4 readable bytes
    unsafe { _mm256_set1_epi32((p as *const i32).read_unaligned()) }
}

/// Group `g` (rows 8g..8g+8) against activation rows m0..m0 + MT.
#[inline(always)]
unsafe fn tile<const T: u8, const VNNI: bool, const MT: usize>(job: &Job, g: usize, m0: usize) {
    let [_, k, n] = job.dims;
    let blocks = k / 32;
    let acts = job.acts;
    let (gbb, head) = (job.w.kind.group_block_bytes(), job.w.kind.head_bytes());
    // only the VNNI path repacks Q8_0 biased (`vpmaddubsw` would saturate on u8 codes)
    let biased = job.w.biased;
    // SAFETY: group g's blocks and the activation rows are inside their
    // buffers (shapes validated); 8 rows of output start at 8g
    unsafe {
        let base = job.w.data.as_ptr().add((job.group0 + g) * blocks * gbb);
        let nib = _mm256_set1_epi8(0x0F);
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(FP4_TABLE.as_ptr() as *const __m128i));
        let mut acc = [_mm256_setzero_ps(); MT];
        let mut off = [_mm256_setzero_ps(); MT];
        for b in 0..blocks {
            let p = base.add(b * gbb);
            _mm_prefetch::<_MM_HINT_T0>(p.add(32 * gbb) as *const i8);
            let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            // NVFP4: the second half's scales (the first's are `d`)
            let d_hi = if T == NV4 { _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i)) } else { d };
            let codes = p.add(head);
            // the block's codes decoded once for every activation row of the tile:
            // Q4: 4 registers of low nibbles and 4 of high; Q8: |q| and q
            let mut u = [_mm256_setzero_si256(); 8];
            let mut sq = [_mm256_setzero_si256(); 8];
            if T == Q8_0 {
                for j in 0..8 {
                    let q = _mm256_loadu_si256(codes.add(32 * j) as *const __m256i);
                    // biased codes are already u8; signed ones take the sign trick
                    u[j] = if biased { q } else { _mm256_sign_epi8(q, q) };
                    sq[j] = q;
                }
            } else {
                for j in 0..4 {
                    let q = _mm256_loadu_si256(codes.add(32 * j) as *const __m256i);
                    u[j] = _mm256_and_si256(q, nib);
                    u[4 + j] = _mm256_and_si256(_mm256_srli_epi16::<4>(q), nib);
                    if T == MX4 || T == NV4 {
                        u[j] = _mm256_shuffle_epi8(table, u[j]);
                        u[4 + j] = _mm256_shuffle_epi8(table, u[4 + j]);
                    }
                }
                if T == Q5_0 {
                    // each lane's 32 high bits: elements 4j..4j+4 for u[j], 16+4j.. for u[4+j]
                    let qh = _mm256_loadu_si256(p.add(16) as *const __m256i);
                    for (i, u) in u.iter_mut().enumerate() {
                        let shift = 4 * (i % 4) + 16 * (i / 4);
                        let bits = _mm256_and_si256(
                            _mm256_srl_epi32(qh, _mm_cvtsi32_si128(shift as i32)),
                            _mm256_set1_epi32(0xF),
                        );
                        *u = _mm256_or_si256(*u, fifth_bits(bits));
                    }
                }
            }
            for t in 0..MT {
                let r = m0 + t;
                let xq = acts.q.as_ptr().add(r * k + b * 32);
                let mut s = [_mm256_setzero_si256(); 2];
                if T == Q8_0 {
                    for j in 0..8 {
                        let x = bcast(xq.add(4 * j));
                        let x = if biased { x } else { _mm256_sign_epi8(x, sq[j]) };
                        s[j & 1] = dp::<VNNI>(s[j & 1], u[j], x);
                    }
                } else {
                    for j in 0..4 {
                        s[0] = dp::<VNNI>(s[0], u[j], bcast(xq.add(4 * j)));
                        s[1] = dp::<VNNI>(s[1], u[4 + j], bcast(xq.add(16 + 4 * j)));
                    }
                }
                let dx = *acts.d.get_unchecked(r * blocks + b);
                if T == NV4 {
                    // each half by its own scale; w = d t[code] - 12 d per half
                    let dxv = _mm256_set1_ps(dx);
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[0]), _mm256_mul_ps(d, dxv), acc[t]);
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[1]), _mm256_mul_ps(d_hi, dxv), acc[t]);
                    let sums = acts.sums.get_unchecked(2 * (r * blocks + b)..);
                    off[t] = _mm256_fmadd_ps(d, _mm256_set1_ps(-12.0 * sums[0]), off[t]);
                    off[t] = _mm256_fmadd_ps(d_hi, _mm256_set1_ps(-12.0 * sums[1]), off[t]);
                    continue;
                }
                let dots = _mm256_add_epi32(s[0], s[1]);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), _mm256_mul_ps(d, _mm256_set1_ps(dx)), acc[t]);
                let sum = *acts.sums32.get_unchecked(r * blocks + b);
                match T {
                    // w = d q - 8 d
                    Q4_0 => off[t] = _mm256_fmadd_ps(d, _mm256_set1_ps(-8.0 * sum), off[t]),
                    // w = d q - 16 d
                    Q5_0 => off[t] = _mm256_fmadd_ps(d, _mm256_set1_ps(-16.0 * sum), off[t]),
                    // w = d t[code] - 12 d
                    MX4 => off[t] = _mm256_fmadd_ps(d, _mm256_set1_ps(-12.0 * sum), off[t]),
                    // biased Q8_0: the codes are q + 128
                    Q8_0 if biased => off[t] = _mm256_fmadd_ps(d, _mm256_set1_ps(-128.0 * sum), off[t]),
                    // w = d q + m
                    Q4_1 => {
                        let mins = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i));
                        off[t] = _mm256_fmadd_ps(mins, _mm256_set1_ps(sum), off[t]);
                    }
                    _ => {}
                }
            }
        }
        let factor = _mm256_set1_ps(job.w.output_factor());
        for t in 0..MT {
            let mut v = _mm256_add_ps(acc[t], off[t]);
            if T == NV4 {
                v = _mm256_mul_ps(v, factor);
            }
            if let Some(bias) = job.bias {
                v = _mm256_add_ps(v, _mm256_loadu_ps(bias.as_ptr().add(8 * g)));
            }
            _mm256_storeu_ps(job.out.at((m0 + t) * n + 8 * g), v);
        }
    }
}
