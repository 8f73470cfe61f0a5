//! Paged causal attention on the CPU: one task per (token, kv head), so the
//! query heads sharing a kv head read each key and value row once. Scores are
//! exact f32 like the reference's (same softmax, same order of the sum over
//! positions); only the dot products' summation order differs.

use std::cell::RefCell;

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
    k: &'a [f32],
    v: &'a [f32],
    tables: &'a [u32],
    seq: &'a [u32],
    pos: &'a [u32],
    tasks: Chunks,
    out: SharedOut,
}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

#[allow(clippy::too_many_arguments)]
pub fn attention(
    ctx: &Ctx,
    p: &Attention,
    dims: AttentionDims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    tables: &[u32],
    seq: &[u32],
    pos: &[u32],
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
        tasks: Chunks::new(pos.len() * dims.kv_heads, 1),
        out: SharedOut(out.as_mut_ptr()),
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
        while let Some(tasks) = job.tasks.next() {
            for task in tasks {
                let (t, kvh) = (task / kv_heads, task % kv_heads);
                let (sq, p) = (job.seq[t] as usize, job.pos[t] as usize);
                let first = job.p.window.map_or(0, |w| (p + 1).saturating_sub(w));
                let len = p + 1 - first;
                let slot = |j: usize| job.tables[sq * max_blocks + j / bs] as usize * bs + j % bs;
                let row = |cache: &'_ [f32], j: usize| -> *const f32 {
                    cache[(slot(j) * kv_heads + kvh) * d..][..d].as_ptr()
                };
                let scores = &mut s[..group * len];
                for j in first..=p {
                    // SAFETY: `row` sliced d values
                    let kr = unsafe { std::slice::from_raw_parts(row(job.k, j), d) };
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
                    let max = sg.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut denom = 0.0f32;
                    for v in sg.iter_mut() {
                        *v = (*v - max).exp();
                        denom += *v;
                    }
                    for v in sg.iter_mut() {
                        *v /= denom;
                    }
                }
                // SAFETY: the group's output rows belong to this task alone
                let o = unsafe { std::slice::from_raw_parts_mut(job.out.at((t * heads + kvh * group) * d), group * d) };
                o.fill(0.0);
                for j in first..=p {
                    // SAFETY: `row` sliced d values
                    let vr = unsafe { std::slice::from_raw_parts(row(job.v, j), d) };
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
    }
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
