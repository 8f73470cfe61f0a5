//! matmul on the CPU: `out[m, n] = x[m, :] . w[n, :] (+ b[n])`.
//!
//! Threads take chunks of weight rows; each chunk is decoded once (to i8
//! codes for the integer formats, to f32 for the float ones) and then dotted
//! with every activation row, a few rows at a time, so a prefill decodes each
//! weight once and a decode step reads it once. Quantized weights meet
//! activations quantized per 32 to i8 (`acts.rs`): the integer dot products
//! llama.cpp uses, and the reason these results differ from the reference's
//! f32 ones by the activations' rounding (tolerance in the conformance suite).

use std::cell::RefCell;

use ferrum_engine::cpu::CpuData;
use ferrum_engine::quant::QuantizedMatrix;
use ferrum_engine::quant::ggml::GgmlType;
use ferrum_engine::{Error, Result};
use half::slice::HalfFloatSliceExt;

use crate::Ctx;
use crate::acts::{QuantActs, quantize_row};
use crate::isa::Isa;
use crate::pool::Chunks;
use crate::readers::{self, Ggml, Int4Rows, Int8Rows, Mxfp4Rows, Nvfp4Rows, Reader};
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512};
use crate::simd::{Portable, Simd};

/// Weight rows a thread decodes at once: small enough to stay in L1.
const CHUNK_ROWS: usize = 8;

/// A pointer the threads write disjoint elements through.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub *mut f32);

impl SharedOut {
    /// Element `i` (a method, so closures capture the whole Sync wrapper).
    pub fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}
// SAFETY: every thread writes elements no other thread touches, and the
// owner waits for all of them (`Pool::run`) before using the buffer again.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

/// What one product needs, shared by the threads.
struct Job<'a, W> {
    w: &'a W,
    x: &'a [f32],
    acts: &'a QuantActs,
    bias: Option<&'a [f32]>,
    dims: [usize; 3],
    rows: Chunks,
    out: SharedOut,
}

/// Runs a matmul with the fastest kernel for the weight's storage.
pub fn matmul(
    ctx: &Ctx,
    x: &[f32],
    w: &CpuData,
    bias: Option<&[f32]>,
    dims: [usize; 3],
    out: &mut [f32],
) -> Result<()> {
    matmul_rows(ctx, x, w, 0, bias, dims, out)
}

/// [`matmul`] against weight rows `row0..row0 + n` (one expert of a stack):
/// `out[m, j] = x[m, :] . w[row0 + j, :] (+ bias[j])`.
pub fn matmul_rows(
    ctx: &Ctx,
    x: &[f32],
    w: &CpuData,
    row0: usize,
    bias: Option<&[f32]>,
    dims: [usize; 3],
    out: &mut [f32],
) -> Result<()> {
    let [_, k, n] = dims;
    let span = row0 * k..(row0 + n) * k;
    match w {
        CpuData::F32(v) => float(ctx, &F32Rows(&v[span]), x, bias, dims, out),
        #[cfg(target_arch = "x86_64")]
        CpuData::F16(v) if ctx.isa != Isa::Portable && dims[0] <= 4 && dims[2].is_multiple_of(4) => {
            let quads = dims[2] / 4;
            let job = crate::f16_x86::Job {
                w: &v[span],
                x,
                bias,
                dims,
                quads: Chunks::new(quads, quads.div_ceil(ctx.pool.threads() * 2)),
                out: SharedOut(out.as_mut_ptr()),
            };
            // SAFETY: AVX2 + F16C (the ISA was checked); m <= 4 and n % 4 == 0 here
            finish(ctx.pool.run(&|_| unsafe { crate::f16_x86::part(&job) }))
        }
        CpuData::F16(v) => float(ctx, &F16Rows(&v[span]), x, bias, dims, out),
        CpuData::BF16(v) => float(ctx, &Bf16Rows(&v[span]), x, bias, dims, out),
        CpuData::Quant(q) if k.is_multiple_of(32) => match q {
            #[cfg(target_arch = "x86_64")]
            QuantizedMatrix::Ggml(g) if ctx.isa != Isa::Portable && crate::fused_x86::has(g.ty()) => {
                fused(ctx, g, row0, x, bias, dims, out)
            }
            QuantizedMatrix::Ggml(g) => match g.ty() {
                GgmlType::Q4_0 => int(ctx, &Offset(Ggml::<readers::Q4_0>::new(g), row0), x, bias, dims, out),
                GgmlType::Q4_1 => int(ctx, &Offset(Ggml::<readers::Q4_1>::new(g), row0), x, bias, dims, out),
                GgmlType::Q5_0 => int(ctx, &Offset(Ggml::<readers::Q5_0>::new(g), row0), x, bias, dims, out),
                GgmlType::Q5_1 => int(ctx, &Offset(Ggml::<readers::Q5_1>::new(g), row0), x, bias, dims, out),
                GgmlType::Q8_0 => int(ctx, &Offset(Ggml::<readers::Q8_0>::new(g), row0), x, bias, dims, out),
                GgmlType::Q2_K => int(ctx, &Offset(Ggml::<readers::Q2K>::new(g), row0), x, bias, dims, out),
                GgmlType::Q3_K => int(ctx, &Offset(Ggml::<readers::Q3K>::new(g), row0), x, bias, dims, out),
                GgmlType::Q4_K => int(ctx, &Offset(Ggml::<readers::Q4K>::new(g), row0), x, bias, dims, out),
                GgmlType::Q5_K => int(ctx, &Offset(Ggml::<readers::Q5K>::new(g), row0), x, bias, dims, out),
                GgmlType::Q6_K => int(ctx, &Offset(Ggml::<readers::Q6K>::new(g), row0), x, bias, dims, out),
                _ => float(ctx, &Offset(Dequantized(q), row0), x, bias, dims, out),
            },
            QuantizedMatrix::Int8(m) => int(ctx, &Offset(Int8Rows(m), row0), x, bias, dims, out),
            QuantizedMatrix::Int4(m) if m.group() % 16 == 0 => int(ctx, &Offset(Int4Rows(m), row0), x, bias, dims, out),
            QuantizedMatrix::Nvfp4(m) => int(ctx, &Offset(Nvfp4Rows(m), row0), x, bias, dims, out),
            QuantizedMatrix::Mxfp4(m) => int(ctx, &Offset(Mxfp4Rows(m), row0), x, bias, dims, out),
            // FP8 is a float format; the rest have groups the kernel cannot split
            _ => float(ctx, &Offset(Dequantized(q), row0), x, bias, dims, out),
        },
        CpuData::Quant(q) => float(ctx, &Offset(Dequantized(q), row0), x, bias, dims, out),
        CpuData::U32(_) | CpuData::F8E4M3(_) => Err(Error::op("matmul", "u32 or fp8 cache weights")),
    }
}

/// A weight's rows from `.1` on: row `r` of the view is row `r + .1`.
struct Offset<W>(W, usize);

impl<R: Reader> Reader for Offset<R> {
    const AFFINE: bool = R::AFFINE;

    #[inline(always)]
    fn decode_row(&self, r: usize, q: &mut [i8], a: &mut [f32], b: &mut [f32]) {
        self.0.decode_row(r + self.1, q, a, b)
    }
}

impl<F: FloatRows> FloatRows for Offset<F> {
    fn rows<'s>(&'s self, rows: std::ops::Range<usize>, k: usize, scratch: &'s mut [f32]) -> &'s [f32] {
        self.0.rows(rows.start + self.1..rows.end + self.1, k, scratch)
    }
}

/// Ranges of weight rows the threads take: long, so each thread streams
/// through memory the hardware prefetcher can follow (it stops at 4 KiB
/// pages), and two per thread, so a slower core takes less.
fn row_chunks(n: usize, threads: usize) -> Chunks {
    Chunks::new(n, n.div_ceil(threads * 2).max(CHUNK_ROWS))
}

fn finish(ok: bool) -> Result<()> {
    if ok { Ok(()) } else { Err(Error::Backend("cpu matmul: a worker thread panicked".into())) }
}

// ---- integer formats ----

fn int<R: Reader>(ctx: &Ctx, r: &R, x: &[f32], bias: Option<&[f32]>, dims: [usize; 3], out: &mut [f32]) -> Result<()> {
    let [m, k, n] = dims;
    let mut acts = ctx.acts.lock().map_err(|_| Error::Backend("cpu scratch lock poisoned".into()))?;
    acts.resize(m, k);
    quantize_acts(ctx, x, m, k, &mut acts)?;
    let job = Job {
        w: r,
        x,
        acts: &acts,
        bias,
        dims,
        rows: row_chunks(n, ctx.pool.threads()),
        out: SharedOut(out.as_mut_ptr()),
    };
    let isa = ctx.isa;
    // SAFETY: `isa` is available (checked when the backend was made), and
    // every index the parts use is within the shapes validated by the op.
    finish(ctx.pool.run(&|_| unsafe {
        match isa {
            Isa::Portable => int_part::<R, Portable>(&job),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => int_avx2(&job),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => int_avx512(&job),
            #[cfg(not(target_arch = "x86_64"))]
            _ => int_part::<R, Portable>(&job),
        }
    }))
}

/// A weight repacked 8 rows at a time: `interleaved_x86`.
pub fn repacked(
    ctx: &Ctx,
    x: &[f32],
    w: &crate::repack::Repacked,
    row0: usize,
    bias: Option<&[f32]>,
    dims: [usize; 3],
    out: &mut [f32],
) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::interleaved_x86 as il;
        let [m, k, n] = dims;
        let mut acts = ctx.acts.lock().map_err(|_| Error::Backend("cpu scratch lock poisoned".into()))?;
        acts.resize(m, k);
        quantize_acts(ctx, x, m, k, &mut acts)?;
        let groups = n / 8;
        if !row0.is_multiple_of(8) || !n.is_multiple_of(8) {
            // an expert that does not start or end on a group of 8 rows
            drop(acts);
            return float(ctx, &Offset(RepackedRows(w), row0), x, bias, dims, out);
        }
        let job = il::Job {
            w,
            group0: row0 / 8,
            acts: &acts,
            bias,
            dims,
            groups: Chunks::new(groups, groups.div_ceil(ctx.pool.threads() * 2)),
            out: SharedOut(out.as_mut_ptr()),
        };
        let vnni = ctx.isa == Isa::Avx512;
        // SAFETY: weights are repacked only on an x86 ISA the CPU has; shapes validated
        finish(ctx.pool.run(&|_| unsafe { il::run(vnni, &job) }))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ctx, x, w, row0, bias, dims, out);
        Err(Error::Backend("repacked weights exist only on x86".into()))
    }
}

/// GGUF blocks on x86: the fused kernels of `fused_x86`.
#[cfg(target_arch = "x86_64")]
fn fused(
    ctx: &Ctx,
    g: &ferrum_engine::quant::GgmlBlocks,
    row0: usize,
    x: &[f32],
    bias: Option<&[f32]>,
    dims: [usize; 3],
    out: &mut [f32],
) -> Result<()> {
    use crate::fused_x86 as f;
    let [m, k, n] = dims;
    let mut acts = ctx.acts.lock().map_err(|_| Error::Backend("cpu scratch lock poisoned".into()))?;
    acts.resize(m, k);
    quantize_acts(ctx, x, m, k, &mut acts)?;
    let job = f::Job {
        data: &g.data()[row0 * g.row_bytes()..],
        row_bytes: g.row_bytes(),
        acts: &acts,
        bias,
        dims,
        rows: row_chunks(n, ctx.pool.threads()),
        out: SharedOut(out.as_mut_ptr()),
    };
    let (ty, vnni) = (g.ty(), ctx.isa == Isa::Avx512);
    // SAFETY: the ISA is available (checked when the backend was made); shapes validated
    finish(ctx.pool.run(&|_| unsafe { f::run(ty, vnni, &job) }))
}

fn quantize_acts(ctx: &Ctx, x: &[f32], m: usize, k: usize, acts: &mut QuantActs) -> Result<()> {
    let (q, d, s) = (&mut acts.q[..m * k], &mut acts.d[..m * k / 32], &mut acts.sums[..m * k / 16]);
    let s32 = &mut acts.sums32[..m * k / 32];
    if m < 8 {
        for r in 0..m {
            quantize_row(
                &x[r * k..(r + 1) * k],
                &mut q[r * k..(r + 1) * k],
                &mut d[r * k / 32..(r + 1) * k / 32],
                &mut s[r * k / 16..(r + 1) * k / 16],
                &mut s32[r * k / 32..(r + 1) * k / 32],
            );
        }
        return Ok(());
    }
    let (qp, dp, sp) = (SharedBytes(q.as_mut_ptr()), SharedOut(d.as_mut_ptr()), SharedOut(s.as_mut_ptr()));
    let s32p = SharedOut(s32.as_mut_ptr());
    let rows = Chunks::new(m, 4);
    finish(ctx.pool.run(&|_| {
        while let Some(rs) = rows.next() {
            for r in rs {
                // SAFETY: row r's ranges belong to this thread alone
                unsafe {
                    quantize_row(
                        &x[r * k..(r + 1) * k],
                        std::slice::from_raw_parts_mut(qp.at(r * k), k),
                        std::slice::from_raw_parts_mut(dp.at(r * k / 32), k / 32),
                        std::slice::from_raw_parts_mut(sp.at(r * k / 16), k / 16),
                        std::slice::from_raw_parts_mut(s32p.at(r * k / 32), k / 32),
                    )
                };
            }
        }
    }))
}

#[derive(Clone, Copy)]
struct SharedBytes(*mut i8);

impl SharedBytes {
    fn at(self, i: usize) -> *mut i8 {
        self.0.wrapping_add(i)
    }
}
// SAFETY: as `SharedOut`
unsafe impl Sync for SharedBytes {}

#[derive(Default)]
struct IntScratch {
    q: Vec<i8>,
    scale8: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
}

#[derive(Default)]
struct FloatScratch {
    w: Vec<f32>,
}

thread_local! {
    static INT_SCRATCH: RefCell<IntScratch> = RefCell::default();
    static FLOAT_SCRATCH: RefCell<FloatScratch> = RefCell::default();
}

fn grow<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn int_avx2<R: Reader>(job: &Job<R>) {
    // SAFETY: the caller's contract
    unsafe { int_part::<R, Avx2>(job) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn int_avx512<R: Reader>(job: &Job<R>) {
    // SAFETY: the caller's contract
    unsafe { int_part::<R, Avx512>(job) }
}

/// One thread's share: chunks of weight rows, each decoded once.
#[inline(always)]
unsafe fn int_part<R: Reader, S: Simd>(job: &Job<R>) {
    let [m, k, _] = job.dims;
    // taken out of the thread-local rather than used in a closure: a closure
    // would not inherit the caller's target features, nor inline intrinsics
    let mut s = INT_SCRATCH.take();
    let q = grow(&mut s.q, CHUNK_ROWS * k);
    let scale8 = grow(&mut s.scale8, CHUNK_ROWS * k / 4);
    let a = grow(&mut s.a, k / 16);
    let b = grow(&mut s.b, CHUNK_ROWS * k / 16);
    while let Some(range) = job.rows.next() {
        for start in range.clone().step_by(CHUNK_ROWS) {
            let rows = start..(start + CHUNK_ROWS).min(range.end);
            for (i, row) in rows.clone().enumerate() {
                let bi = &mut b[i * k / 16..(i + 1) * k / 16];
                job.w.decode_row(row, &mut q[i * k..(i + 1) * k], a, bi);
                // one scale per 16, four lanes each: the layout `qdot32` wants
                for (c, s8) in scale8[i * k / 4..(i + 1) * k / 4].chunks_exact_mut(8).enumerate() {
                    s8[..4].fill(a[2 * c]);
                    s8[4..].fill(a[2 * c + 1]);
                }
            }
            let mut m0 = 0;
            while m0 < m {
                let left = m - m0;
                // SAFETY: the caller's contract
                unsafe {
                    match left {
                        1 => int_tile::<R, S, 1, 4>(job, rows.clone(), m0, q, scale8, b),
                        2 => int_tile::<R, S, 2, 2>(job, rows.clone(), m0, q, scale8, b),
                        3 => int_tile::<R, S, 3, 1>(job, rows.clone(), m0, q, scale8, b),
                        _ => int_tile::<R, S, 4, 1>(job, rows.clone(), m0, q, scale8, b),
                    }
                }
                m0 += left.min(4);
            }
        }
    }
    INT_SCRATCH.set(s);
}

/// Activation rows m0..m0 + MT against the decoded chunk, CH partial sums each.
#[inline(always)]
unsafe fn int_tile<R: Reader, S: Simd, const MT: usize, const CH: usize>(
    job: &Job<R>,
    rows: std::ops::Range<usize>,
    m0: usize,
    q: &[i8],
    scale8: &[f32],
    b: &[f32],
) {
    let [_, k, n] = job.dims;
    let blocks = k / 32;
    let acts = job.acts;
    for (i, row) in rows.enumerate() {
        let mut acc = [[S::zero(); CH]; MT];
        let wq = q[i * k..].as_ptr();
        let ws = scale8[i * k / 4..].as_ptr();
        let mut c = 0;
        while c + CH <= blocks {
            for u in 0..CH {
                for t in 0..MT {
                    let r = m0 + t;
                    // SAFETY: c + u < blocks; rows hold k codes and k / 4 scales
                    acc[t][u] = unsafe {
                        S::qdot32(
                            acc[t][u],
                            wq.add((c + u) * 32),
                            acts.q.as_ptr().add(r * k + (c + u) * 32),
                            ws.add((c + u) * 8),
                            *acts.d.get_unchecked(r * blocks + c + u),
                        )
                    };
                }
            }
            c += CH;
        }
        while c < blocks {
            for t in 0..MT {
                let r = m0 + t;
                // SAFETY: as above
                acc[t][0] = unsafe {
                    S::qdot32(
                        acc[t][0],
                        wq.add(c * 32),
                        acts.q.as_ptr().add(r * k + c * 32),
                        ws.add(c * 8),
                        *acts.d.get_unchecked(r * blocks + c),
                    )
                };
            }
            c += 1;
        }
        for t in 0..MT {
            let r = m0 + t;
            let mut v: f32 = acc[t].iter().map(|&a| S::sum(a)).sum();
            if R::AFFINE {
                v += dot(&b[i * k / 16..(i + 1) * k / 16], acts.row_sums(r));
            }
            if let Some(bias) = job.bias {
                v += bias[row];
            }
            // SAFETY: (r, row) is inside [m, n] and this thread's alone
            unsafe { *job.out.at(r * n + row) = v };
        }
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

// ---- float weights (and formats read through the reference dequantizer) ----

/// Weight rows as f32: borrowed when stored so, else converted into scratch.
trait FloatRows: Sync {
    fn rows<'s>(&'s self, rows: std::ops::Range<usize>, k: usize, scratch: &'s mut [f32]) -> &'s [f32];
}

struct F32Rows<'a>(&'a [f32]);
struct F16Rows<'a>(&'a [half::f16]);
struct Bf16Rows<'a>(&'a [half::bf16]);
struct Dequantized<'a>(&'a QuantizedMatrix);
struct RepackedRows<'a>(&'a crate::repack::Repacked);

impl FloatRows for F32Rows<'_> {
    fn rows<'s>(&'s self, rows: std::ops::Range<usize>, k: usize, _: &'s mut [f32]) -> &'s [f32] {
        &self.0[rows.start * k..rows.end * k]
    }
}

impl FloatRows for F16Rows<'_> {
    fn rows<'s>(&'s self, rows: std::ops::Range<usize>, k: usize, scratch: &'s mut [f32]) -> &'s [f32] {
        let out = &mut scratch[..rows.len() * k];
        self.0[rows.start * k..rows.end * k].convert_to_f32_slice(out);
        out
    }
}

impl FloatRows for Bf16Rows<'_> {
    fn rows<'s>(&'s self, rows: std::ops::Range<usize>, k: usize, scratch: &'s mut [f32]) -> &'s [f32] {
        let out = &mut scratch[..rows.len() * k];
        self.0[rows.start * k..rows.end * k].convert_to_f32_slice(out);
        out
    }
}

impl FloatRows for Dequantized<'_> {
    fn rows<'s>(&'s self, rows: std::ops::Range<usize>, k: usize, scratch: &'s mut [f32]) -> &'s [f32] {
        let out = &mut scratch[..rows.len() * k];
        for (row, o) in rows.zip(out.chunks_exact_mut(k)) {
            // shapes were validated: the row exists and holds k values
            let _ = self.0.dequantize_row_into(row, o);
        }
        out
    }
}

impl FloatRows for RepackedRows<'_> {
    fn rows<'s>(&'s self, rows: std::ops::Range<usize>, k: usize, scratch: &'s mut [f32]) -> &'s [f32] {
        let out = &mut scratch[..rows.len() * k];
        for (row, o) in rows.zip(out.chunks_exact_mut(k)) {
            // shapes were validated: the row exists and holds k values
            let _ = self.0.row_into(row, o);
        }
        out
    }
}

fn float<F: FloatRows>(
    ctx: &Ctx,
    w: &F,
    x: &[f32],
    bias: Option<&[f32]>,
    dims: [usize; 3],
    out: &mut [f32],
) -> Result<()> {
    let acts = QuantActs::default(); // unused by float parts; holds no memory
    let n = dims[2];
    let job = Job {
        w,
        x,
        acts: &acts,
        bias,
        dims,
        rows: row_chunks(n, ctx.pool.threads()),
        out: SharedOut(out.as_mut_ptr()),
    };
    let isa = ctx.isa;
    // SAFETY: as in `int`
    finish(ctx.pool.run(&|_| unsafe {
        match isa {
            Isa::Portable => float_part::<F, Portable>(&job),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => float_avx2(&job),
            #[cfg(not(target_arch = "x86_64"))]
            _ => float_part::<F, Portable>(&job),
        }
    }))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_avx2<F: FloatRows>(job: &Job<F>) {
    // SAFETY: the caller's contract
    unsafe { float_part::<F, Avx2>(job) }
}

#[inline(always)]
unsafe fn float_part<F: FloatRows, S: Simd>(job: &Job<F>) {
    let [m, k, _] = job.dims;
    let mut s = FLOAT_SCRATCH.take(); // not a closure: see `int_part`
    let scratch = grow(&mut s.w, CHUNK_ROWS * k);
    while let Some(range) = job.rows.next() {
        for start in range.clone().step_by(CHUNK_ROWS) {
            let rows = start..(start + CHUNK_ROWS).min(range.end);
            let w = job.w.rows(rows.clone(), k, scratch);
            let mut m0 = 0;
            while m0 < m {
                let left = m - m0;
                // SAFETY: the caller's contract
                unsafe {
                    match left {
                        1 => float_tile::<F, S, 1, 4>(job, rows.clone(), m0, w),
                        2 => float_tile::<F, S, 2, 2>(job, rows.clone(), m0, w),
                        3 => float_tile::<F, S, 3, 1>(job, rows.clone(), m0, w),
                        _ => float_tile::<F, S, 4, 1>(job, rows.clone(), m0, w),
                    }
                }
                m0 += left.min(4);
            }
        }
    }
    FLOAT_SCRATCH.set(s);
}

#[inline(always)]
unsafe fn float_tile<F: FloatRows, S: Simd, const MT: usize, const CH: usize>(
    job: &Job<F>,
    rows: std::ops::Range<usize>,
    m0: usize,
    w: &[f32],
) {
    let [_, k, n] = job.dims;
    let steps = k / 8;
    for (i, row) in rows.enumerate() {
        let wr = &w[i * k..(i + 1) * k];
        let mut acc = [[S::zero(); CH]; MT];
        let mut c = 0;
        while c + CH <= steps {
            for u in 0..CH {
                for t in 0..MT {
                    // SAFETY: (c + u) * 8 + 8 <= k for both rows
                    acc[t][u] = unsafe {
                        S::fma8(acc[t][u], wr.as_ptr().add((c + u) * 8), job.x.as_ptr().add((m0 + t) * k + (c + u) * 8))
                    };
                }
            }
            c += CH;
        }
        while c < steps {
            for t in 0..MT {
                // SAFETY: as above
                acc[t][0] =
                    unsafe { S::fma8(acc[t][0], wr.as_ptr().add(c * 8), job.x.as_ptr().add((m0 + t) * k + c * 8)) };
            }
            c += 1;
        }
        for t in 0..MT {
            let r = m0 + t;
            let xr = &job.x[r * k..(r + 1) * k];
            let mut v: f32 = acc[t].iter().map(|&a| S::sum(a)).sum();
            v += (steps * 8..k).map(|j| wr[j] * xr[j]).sum::<f32>();
            if let Some(bias) = job.bias {
                v += bias[row];
            }
            // SAFETY: (r, row) is inside [m, n] and this thread's alone
            unsafe { *job.out.at(r * n + row) = v };
        }
    }
}
