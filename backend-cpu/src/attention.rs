//! Paged causal attention on the CPU: one task per (token, kv head), so the
//! query heads sharing a kv head read each key and value row once. Scores are
//! exact f32 like the reference's (same softmax, same order of the sum over
//! positions); only the dot products' summation order differs. A cache of
//! f16, bf16 or fp8 has each task's visible rows widened to f32 first, once
//! for all the query heads of the group.

use std::cell::RefCell;

use ferrum_engine::ops::FloatSlice;
use ferrum_engine::ops::attention::{Attention, AttentionDims};
use ferrum_engine::{Error, Result};

use crate::Ctx;
use crate::isa::Isa;
use crate::matmul::SharedOut;
use crate::pool::Chunks;

struct Job<'a> {
    p: &'a Attention,
    dims: AttentionDims,
    q: &'a [f32],
    k: FloatSlice<'a>,
    v: FloatSlice<'a>,
    tables: &'a [u32],
    seq: &'a [u32],
    pos: &'a [u32],
    sinks: Option<&'a [f32]>,
    tasks: Chunks,
    out: SharedOut,
    /// AVX2 + FMA kernels may run
    simd: bool,
}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// a task's visible key and value rows widened to f32 (caches not f32)
    static WIDE: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

pub fn attention(
    ctx: &Ctx,
    p: &Attention,
    dims: AttentionDims,
    (q, [k, v]): (&[f32], [FloatSlice<'_>; 2]),
    [tables, seq, pos]: [&[u32]; 3],
    sinks: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    let slots = k.len() / (dims.kv_heads * dims.head_dim).max(1);
    p.check_pages(tables, dims.max_blocks, slots, seq, pos)?;
    let job = Job {
        p,
        dims,
        q,
        k,
        v,
        tables,
        seq,
        pos,
        sinks,
        tasks: Chunks::new(pos.len() * dims.kv_heads, 1),
        out: SharedOut(out.as_mut_ptr()),
        simd: ctx.isa != Isa::Portable,
    };
    let isa = ctx.isa;
    let ok = ctx.pool.run(&|_| match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 (checked when the backend was made)
        Isa::Avx2 | Isa::Avx512 => unsafe { part_avx2(&job) },
        _ => part(&job),
    });
    if ok { Ok(()) } else { Err(Error::Backend("cpu attention: a worker thread panicked".into())) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn part_avx2(job: &Job) {
    part(job)
}

#[inline(always)]
fn part(job: &Job) {
    let AttentionDims { heads, kv_heads, head_dim: d, max_blocks } = job.dims;
    let group = heads / kv_heads;
    let bs = job.p.block_size;
    {
        let mut s = SCORES.take(); // not a closure, which would lose the target features
        if s.len() < group * max_blocks * bs {
            s.resize(group * max_blocks * bs, 0.0);
        }
        let (mut kw, mut vw) = WIDE.take();
        while let Some(tasks) = job.tasks.next() {
            for task in tasks {
                let (t, kvh) = (task / kv_heads, task % kv_heads);
                let (sq, p) = (job.seq[t] as usize, job.pos[t] as usize);
                let first = job.p.window.map_or(0, |w| (p + 1).saturating_sub(w));
                let len = p + 1 - first;
                let slot = |j: usize| job.tables[sq * max_blocks + j / bs] as usize * bs + j % bs;
                // a cache that is not f32: the visible rows, widened, in order
                for (cache, wide) in [(&job.k, &mut kw), (&job.v, &mut vw)] {
                    if !matches!(cache, FloatSlice::F32(_)) {
                        wide.resize(len * d, 0.0);
                        for j in first..=p {
                            cache.widen_into((slot(j) * kv_heads + kvh) * d, &mut wide[(j - first) * d..][..d]);
                        }
                    }
                }
                let (kr, vr) = (&kw, &vw);
                let row = |cache: &FloatSlice<'_>, j: usize| -> *const f32 {
                    match cache {
                        FloatSlice::F32(c) => c[(slot(j) * kv_heads + kvh) * d..][..d].as_ptr(),
                        _ => {
                            let wide = if std::ptr::eq(cache, &job.k) { kr } else { vr };
                            wide[(j - first) * d..][..d].as_ptr()
                        }
                    }
                };
                let scores = &mut s[..group * len];
                let mut j = first;
                #[cfg(target_arch = "x86_64")]
                if job.simd && d % 8 == 0 {
                    // 8 positions at a time: no horizontal sum per position
                    while j + 8 <= p + 1 {
                        let rows: [*const f32; 8] = std::array::from_fn(|i| row(&job.k, j + i));
                        for g in 0..group {
                            let qr = &job.q[(t * heads + kvh * group + g) * d..][..d];
                            let out = &mut scores[g * len + j - first..][..8];
                            // SAFETY: AVX2 + FMA (job.simd); the rows hold d values
                            unsafe { x86::dots8(qr.as_ptr(), &rows, d, job.p.scale, out.as_mut_ptr()) };
                            if let Some(cap) = job.p.softcap {
                                out.iter_mut().for_each(|sc| *sc = cap * (*sc / cap).tanh());
                            }
                        }
                        j += 8;
                    }
                }
                for j in j..=p {
                    // SAFETY: `row` sliced d values
                    let kr = unsafe { std::slice::from_raw_parts(row(&job.k, j), d) };
                    for g in 0..group {
                        let qr = &job.q[(t * heads + kvh * group + g) * d..][..d];
                        let mut sc = job.p.scale * dot(qr, kr);
                        if let Some(cap) = job.p.softcap {
                            sc = cap * (sc / cap).tanh();
                        }
                        scores[g * len + j - first] = sc;
                    }
                }
                for g in 0..group {
                    let sg = &mut scores[g * len..(g + 1) * len];
                    let sink = job.sinks.map(|s| s[kvh * group + g]);
                    let max = sg.iter().copied().chain(sink).fold(f32::NEG_INFINITY, f32::max);
                    for v in sg.iter_mut() {
                        *v = exp(*v - max);
                    }
                    let denom = sum(sg) + sink.map_or(0.0, |s| exp(s - max));
                    for v in sg.iter_mut() {
                        *v /= denom;
                    }
                }
                // SAFETY: the group's output rows belong to this task alone
                let o = unsafe { std::slice::from_raw_parts_mut(job.out.at((t * heads + kvh * group) * d), group * d) };
                o.fill(0.0);
                for j in first..=p {
                    // SAFETY: `row` sliced d values
                    let vr = unsafe { std::slice::from_raw_parts(row(&job.v, j), d) };
                    for g in 0..group {
                        let w = scores[g * len + j - first];
                        for (o, &v) in o[g * d..(g + 1) * d].iter_mut().zip(vr) {
                            *o += w * v;
                        }
                    }
                }
            }
        }
        SCORES.set(s);
        WIDE.set((kw, vw));
    }
}

/// e^x for x <= 0 (scores minus their max) to about 2e-7 relative: e^x =
/// 2^n e^r with n = round(x / ln 2), r = x - n ln 2 in two parts (Cody-Waite)
/// and e^r by its Taylor series to r^7 (|r| <= ln 2 / 2), in plain arithmetic
/// the compiler vectorises; libm's scalar `expf` was a third of a long
/// context's attention.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75; // few mantissa bits: n * LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    let xc = x.max(-87.0);
    let n = (xc * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0; // round to nearest (1.5 * 2^23)
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p * r + c;
    }
    let y = p * f32::from_bits(((n as i32 + 127) as u32) << 23);
    // below e^-87 the reference's expf is subnormal or 0: negligible next to e^0
    if x.is_nan() {
        x
    } else if x < -87.0 {
        0.0
    } else {
        y
    }
}

#[inline(always)]
fn sum(v: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = v.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..16 {
            lanes[l] += c[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..16 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `out[i] = scale * q . rows[i]` for 8 rows of `d` (a multiple of 8):
    /// one accumulator per row, reduced together by a tree of `hadd`s.
    ///
    /// # Safety
    /// AVX2 and FMA present; `q` and every row hold `d` floats, `out` 8.
    #[inline(always)]
    pub unsafe fn dots8(q: *const f32, rows: &[*const f32; 8], d: usize, scale: f32, out: *mut f32) {
        // SAFETY: the caller's contract
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 8];
            for c in (0..d).step_by(8) {
                let qv = _mm256_loadu_ps(q.add(c));
                for j in 0..8 {
                    acc[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(rows[j].add(c)), acc[j]);
                }
            }
            let s01 = _mm256_hadd_ps(acc[0], acc[1]);
            let s23 = _mm256_hadd_ps(acc[2], acc[3]);
            let s45 = _mm256_hadd_ps(acc[4], acc[5]);
            let s67 = _mm256_hadd_ps(acc[6], acc[7]);
            let (a, b) = (_mm256_hadd_ps(s01, s23), _mm256_hadd_ps(s45, s67));
            // lanes 0-3 of a: rows 0-3 over elements 0-3 of each 8; lanes 4-7 over 4-7
            let sum = _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(a, b), _mm256_permute2f128_ps::<0x31>(a, b));
            _mm256_storeu_ps(out, _mm256_mul_ps(sum, _mm256_set1_ps(scale)));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_within_3e_7_of_libm_where_it_matters() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -(i as f32) * 87.0 / 200_000.0;
            let (got, want) = (super::exp(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(super::exp(-1000.0), 0.0);
        assert_eq!(super::exp(0.0), 1.0);
        assert!(super::exp(f32::NAN).is_nan());
    }
}
