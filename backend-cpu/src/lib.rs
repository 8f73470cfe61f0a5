//! Ferrum's fast CPU backend: the ops of `ferrum_engine::ops` with SIMD
//! kernels (AVX-512 VNNI, AVX2, portable; see [`isa`]) on one persistent
//! thread pool ([`pool`]). Memory is the reference backend's (`CpuData`), so
//! GGUF blocks stay as the file holds them and ops without a faster kernel
//! here run the reference's loops.
//!
//! The hot ops have kernels of their own: matmul (integer dot products over
//! activations quantized to i8 for every quantized format, FMA for float
//! weights) and attention, both split over the pool; row-wise ops split their
//! rows when a prefill makes many. It records too: a recording is the op list,
//! replayed without validation or allocation (a test counts them).

pub mod acts;
mod attention;
#[cfg(target_arch = "x86_64")]
mod f16_x86;
#[cfg(target_arch = "x86_64")]
mod fused_x86;
#[cfg(target_arch = "x86_64")]
mod interleaved_x86;
pub mod isa;
mod matmul;
mod moe;
pub mod pool;
mod profile;
mod readers;
mod repack;
mod simd;

use std::borrow::Borrow;
use std::sync::{Arc, Mutex, RwLockReadGuard};

use ferrum_engine::backend::{Recording, validate};
use ferrum_engine::cpu::{
    CpuData, OpRecorder, RecordedOp, quantized_tensor, read_lock, tensor_from_bytes, write_lock, zeroed_tensor,
};
use ferrum_engine::ops::attention::AttentionDims;
use ferrum_engine::ops::{Attention, Op, OpKind};
use ferrum_engine::quant::QuantizedMatrix;
use ferrum_engine::{Backend, DType, Error, Result, Tensor};

pub use isa::Isa;
use pool::{Chunks, Pool};

/// What the kernels share: the pool, the instruction set, scratch.
pub struct Ctx {
    pool: Pool,
    isa: Isa,
    acts: Mutex<acts::QuantActs>,
    moe: Mutex<moe::Scratch>,
    profile: profile::Profile,
}

pub struct FastCpuBackend {
    /// Shared with the recordings, which replay on it.
    ctx: Arc<Ctx>,
    recorder: OpRecorder,
}

impl std::fmt::Debug for FastCpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FastCpuBackend({}, {} threads)", self.ctx.isa.name(), self.ctx.pool.threads())
    }
}

/// The machine's physical cores (hyper-threads share one core's SIMD units,
/// so more threads than cores only contend), or the logical count if unknown.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cores = std::collections::HashSet::new();
    for cpu in 0..logical {
        let topo = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
        let read = |f: &str| std::fs::read_to_string(format!("{topo}/{f}")).ok();
        match (read("physical_package_id"), read("core_id")) {
            (Some(p), Some(c)) => {
                cores.insert((p.trim().to_string(), c.trim().to_string()));
            }
            _ => return logical,
        }
    }
    cores.len().clamp(1, logical)
}

/// The fast CPU backend with `threads` threads (None: the physical cores) on
/// the best instruction set (or `FERRUM_CPU_ISA`'s).
pub fn open(threads: Option<usize>) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(FastCpuBackend::new(threads.unwrap_or_else(physical_cores), Isa::from_env()?)?))
}

impl Drop for FastCpuBackend {
    fn drop(&mut self) {
        self.ctx.profile.report();
    }
}

impl FastCpuBackend {
    pub fn new(threads: usize, isa: Isa) -> Result<Self> {
        if !isa.available() {
            return Err(Error::Backend(format!("this CPU cannot run the {} path", isa.name())));
        }
        if threads == 0 {
            return Err(Error::Backend("the CPU backend needs at least one thread".into()));
        }
        let pool = Pool::new(threads).map_err(|e| Error::Backend(format!("cannot start {threads} threads: {e}")))?;
        Ok(FastCpuBackend {
            ctx: Arc::new(Ctx {
                pool,
                isa,
                acts: Mutex::default(),
                moe: Mutex::default(),
                profile: profile::Profile::from_env(),
            }),
            recorder: OpRecorder::default(),
        })
    }

    pub fn isa(&self) -> Isa {
        self.ctx.isa
    }

    pub fn threads(&self) -> usize {
        self.ctx.pool.threads()
    }
}

/// A recording replays on the kernels (and pool) of the backend that made it.
struct CpuRecording {
    ctx: Arc<Ctx>,
    ops: Vec<RecordedOp>,
}

impl Recording for CpuRecording {
    fn replay(&self) -> Result<()> {
        for r in &self.ops {
            compute(&self.ctx, &r.op, &r.inputs, &r.out, Checks::Replay)?;
        }
        Ok(())
    }
}

impl Backend for FastCpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn device_description(&self) -> String {
        format!("CPU, {} kernels, {} threads", self.ctx.isa.name(), self.ctx.pool.threads())
    }

    fn supports(&self, op: OpKind, dtype: DType) -> bool {
        op.takes(dtype)
    }

    fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        zeroed_tensor(shape, dtype)
    }

    fn upload(&self, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        tensor_from_bytes(shape, dtype, bytes)
    }

    fn upload_quantized(&self, m: &QuantizedMatrix) -> Result<Tensor> {
        let shape = vec![m.rows(), m.cols()];
        // 32-element GGUF blocks repacked 8 rows at a time for the x86 kernels
        // (same bytes, our own memory; the loader then releases the file's pages)
        if let QuantizedMatrix::Ggml(g) = m
            && cfg!(target_arch = "x86_64")
            && self.ctx.isa != Isa::Portable
            && repack::fits(g, m.rows())
        {
            let r = repack::Repacked::new(g, m.rows(), m.cols(), self.ctx.isa == Isa::Avx512);
            return Ok(Tensor::from_buffer(shape, DType::Quant(m.format()), Arc::new(r)));
        }
        // MXFP4 and NVFP4 in Q4_0's layout, for the same kernels
        let fp4 = match m {
            _ if !cfg!(target_arch = "x86_64") || self.ctx.isa == Isa::Portable => None,
            QuantizedMatrix::Mxfp4(x) if repack::fits_mxfp4(x) => Some(repack::Repacked::from_mxfp4(x)),
            QuantizedMatrix::Nvfp4(x) if repack::fits_nvfp4(x) => Some(repack::Repacked::from_nvfp4(x)),
            _ => None,
        };
        if let Some(r) = fp4 {
            return Ok(Tensor::from_buffer(shape, DType::Quant(m.format()), Arc::new(r)));
        }
        // other blocks stay where the loader has them: the file's mmap
        Ok(quantized_tensor(m))
    }

    fn write(&self, dst: &Tensor, bytes: &[u8]) -> Result<()> {
        if dst.dtype().is_quantized() {
            return Err(Error::Backend(format!("{} weights cannot be overwritten", dst.dtype())));
        }
        if bytes.len() != dst.size_bytes() {
            return Err(Error::Backend(format!("write of {} bytes into {dst:?}", bytes.len())));
        }
        let mut data = write_lock(dst)?;
        match &mut *data {
            // in place: a replayed step's inputs are rewritten every token
            CpuData::F32(v) => bytemuck::cast_slice_mut::<f32, u8>(v).copy_from_slice(bytes),
            CpuData::U32(v) => bytemuck::cast_slice_mut::<u32, u8>(v).copy_from_slice(bytes),
            other => *other = CpuData::from_bytes(dst.dtype(), bytes)?,
        }
        Ok(())
    }

    fn read(&self, src: &Tensor) -> Result<Vec<u8>> {
        if src.dtype().is_quantized() {
            return Err(Error::Backend(format!("{} weights cannot be read back", src.dtype())));
        }
        Ok(read_lock(src)?.as_bytes()?.to_vec())
    }

    fn execute(&self, op: &Op, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
        validate(op, inputs, out)?;
        if self.recorder.record(op, inputs, out)? {
            return Ok(());
        }
        compute(&self.ctx, op, inputs, out, Checks::All)
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn memory_available(&self) -> Option<u64> {
        ferrum_engine::memory::host_available()
    }

    fn begin_recording(&self) -> Result<bool> {
        self.recorder.begin()
    }

    fn end_recording(&self) -> Result<Box<dyn Recording>> {
        Ok(Box::new(CpuRecording { ctx: self.ctx.clone(), ops: self.recorder.end()? }))
    }
}

/// Which host checks an op makes: all of them, or (replaying a recording)
/// those the caller does not make before each replay: the caller checks that
/// no KV slot is written twice; bounds are always checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Checks {
    All,
    Replay,
}

/// u32 outputs the threads write disjoint elements of.
#[derive(Clone, Copy)]
struct SharedIds(*mut u32);
// SAFETY: as `matmul::SharedOut`
unsafe impl Sync for SharedIds {}

impl SharedIds {
    fn at(self, i: usize) -> *mut u32 {
        self.0.wrapping_add(i)
    }
}

/// Rows below this run on the calling thread: waking the pool costs more.
const PARALLEL_ROWS: usize = 16;

/// Runs `op` (validated); allocates nothing.
fn compute<T: Borrow<Tensor>>(ctx: &Ctx, op: &Op, inputs: &[T], out: &Tensor, checks: Checks) -> Result<()> {
    let started = ctx.profile.start();
    let done = run_op(ctx, op, inputs, out, checks);
    ctx.profile.stop(op.kind(), started);
    done
}

fn run_op<T: Borrow<Tensor>>(ctx: &Ctx, op: &Op, inputs: &[T], out: &Tensor, checks: Checks) -> Result<()> {
    let mut guards: [Option<RwLockReadGuard<'_, CpuData>>; 8] = Default::default();
    let mut repacked: [Option<&repack::Repacked>; 8] = Default::default();
    for ((g, rp), t) in guards.iter_mut().zip(&mut repacked).zip(inputs) {
        match t.borrow().buffer().as_any().downcast_ref::<repack::Repacked>() {
            Some(r) => *rp = Some(r),
            None => *g = Some(read_lock(t.borrow())?),
        }
    }
    let ins = |i: usize| -> Result<&CpuData> {
        guards.get(i).and_then(|g| g.as_deref()).ok_or_else(|| {
            let what = if repacked.get(i).is_some_and(|r| r.is_some()) { "a repacked weight" } else { "missing input" };
            Error::op(op.kind().name(), what)
        })
    };
    let shape = |i: usize| inputs[i].borrow().shape();
    let mut out_data = write_lock(out)?;
    match op {
        Op::Argmax(p) => {
            let (x, cols) = (ins(0)?.f32()?, shape(0)[1]);
            let ids = out_data.u32_mut()?;
            if ids.len() < 2 || ctx.pool.threads() == 1 {
                p.reference(x, cols, ids);
                return Ok(());
            }
            // a batch's rows of logits (49152 wide for SmolLM2) over the pool
            let (rows, ptr) = (Chunks::new(ids.len(), 1), SharedIds(ids.as_mut_ptr()));
            let ok = ctx.pool.run(&|_| {
                while let Some(r) = rows.next() {
                    // SAFETY: each row's id belongs to the thread that took the row
                    let o = unsafe { std::slice::from_raw_parts_mut(ptr.at(r.start), r.len()) };
                    p.reference(&x[r.start * cols..r.end * cols], cols, o);
                }
            });
            return if ok { Ok(()) } else { Err(Error::Backend("cpu: a worker thread panicked".into())) };
        }
        Op::Sample(p) => {
            let cols = shape(0)[1];
            p.reference(ins(0)?.f32()?, cols, ins(1)?.f32()?, ins(2)?.f32()?, out_data.u32_mut()?);
            return Ok(());
        }
        Op::IndexTopk(p) => {
            let (q, w, k) = (ins(0)?.f32()?, ins(1)?.f32()?, ins(2)?.floats()?);
            let (tables, seq, pos) = (ins(3)?.u32()?, ins(4)?.u32()?, ins(5)?.u32()?);
            let (heads, d, max_blocks) = (shape(0)[1], shape(0)[2], shape(3)[1]);
            let out = SharedIds(out_data.u32_mut()?.as_mut_ptr());
            // the reference's loops, a chunk of tokens per thread
            return by_tokens(ctx, pos.len(), |r| {
                // SAFETY: the chunks are disjoint rows of the output
                let o = unsafe { std::slice::from_raw_parts_mut(out.at(r.start * p.top_k), r.len() * p.top_k) };
                let (q, w) = (&q[r.start * heads * d..r.end * heads * d], &w[r.start * heads..r.end * heads]);
                p.reference(q, w, k, max_blocks, tables, &seq[r.clone()], &pos[r], o)
            });
        }
        Op::KvStore(p) => {
            let (src, slots) = (ins(0)?.f32()?, ins(1)?.u32()?);
            if checks == Checks::All {
                p.check_slots(slots)?;
            }
            let mut cache = out_data.cache_mut()?;
            let row = src.len() / slots.len().max(1);
            for (t, &slot) in slots.iter().enumerate() {
                let slot = slot as usize;
                if slot >= p.num_slots {
                    return Err(Error::op("kv_store", format!("slot {slot} past {} slots", p.num_slots)));
                }
                cache.store(slot * row, &src[t * row..(t + 1) * row]);
            }
            return Ok(());
        }
        _ => {}
    }
    let o = out_data.f32_mut()?;
    match op {
        Op::GatherRows(p) => {
            let table = shape(0);
            match repacked[0] {
                Some(r) => {
                    let ids = ins(1)?.u32()?;
                    ferrum_engine::ops::GatherRows::check_ids(ids, table[0])?;
                    for (&id, row) in ids.iter().zip(o.chunks_exact_mut(table[1])) {
                        r.row_into(id as usize, row)?;
                    }
                }
                None => p.reference(ins(0)?.weight_rows()?, [table[0], table[1]], ins(1)?.u32()?, o)?,
            }
        }
        Op::RmsNorm(p) => {
            let (x, w) = (ins(0)?.f32()?, ins(1)?.f32()?);
            let b = if inputs.len() > 2 { Some(ins(2)?.f32()?) } else { None };
            rows(ctx, w.len(), w.len(), o, |r, o| p.reference(&x[r.start * w.len()..r.end * w.len()], w, b, o))?
        }
        Op::Matmul(p) => {
            let _ = p;
            let bias = if inputs.len() > 2 { Some(ins(2)?.f32()?) } else { None };
            let dims = [shape(0)[0], shape(0)[1], shape(1)[0]];
            match repacked[1] {
                Some(r) => matmul::repacked(ctx, ins(0)?.f32()?, r, 0, bias, dims, o)?,
                None => matmul::matmul(ctx, ins(0)?.f32()?, ins(1)?, bias, dims, o)?,
            }
        }
        Op::Rope(p) => {
            let (x, positions, freqs) = (ins(0)?.f32()?, ins(1)?.u32()?, ins(2)?.f32()?);
            let (head_dim, row) = (shape(0)[2], shape(0)[1] * shape(0)[2]);
            rows(ctx, row, row, o, |r, o| {
                p.reference(&x[r.start * row..r.end * row], &positions[r.clone()], freqs, head_dim, o)
            })?
        }
        Op::KvStore(_) => unreachable!("written above"),
        Op::Attention(p) => {
            let dims = AttentionDims {
                heads: shape(0)[1],
                kv_heads: shape(1)[1],
                head_dim: shape(0)[2],
                max_blocks: shape(3)[1],
            };
            let (q, k, v) = (ins(0)?.f32()?, ins(1)?.floats()?, ins(2)?.floats()?);
            let (tables, seq, pos) = (ins(3)?.u32()?, ins(4)?.u32()?, ins(5)?.u32()?);
            // on the stack: a replayed decode step allocates nothing
            let mut dtypes = [DType::F32; 8];
            dtypes.iter_mut().zip(inputs).for_each(|(d, t)| *d = t.borrow().dtype());
            let (sinks, selected) = Attention::optional_inputs(&dtypes[..inputs.len().min(8)])?;
            let sinks = sinks.map(|i| ins(i)?.f32()).transpose()?;
            match selected {
                // sparse attention (DeepSeek-V3.2): the reference's loops, a chunk of tokens per thread
                Some(i) => {
                    let (sel, row) = (ins(i)?.u32()?, dims.heads * dims.head_dim);
                    let n = sel.len() / pos.len().max(1);
                    let out = matmul::SharedOut(o.as_mut_ptr());
                    by_tokens(ctx, pos.len(), |r| {
                        // SAFETY: the chunks are disjoint rows of the output
                        let o = unsafe { std::slice::from_raw_parts_mut(out.at(r.start * row), r.len() * row) };
                        let (q, sel) = (&q[r.start * row..r.end * row], &sel[r.start * n..r.end * n]);
                        let (seq, pos) = (&seq[r.clone()], &pos[r]);
                        p.reference(dims, q, k, v, tables, seq, pos, sinks, Some(sel), o)
                    })?
                }
                None => attention::attention(ctx, p, dims, (q, [k, v]), [tables, seq, pos], sinks, o)?,
            }
        }
        Op::Glu(p) => {
            let (gate, up) = (ins(0)?.f32()?, ins(1)?.f32()?);
            let row = shape(0).last().copied().unwrap_or(1);
            rows(ctx, row, row, o, |r, o| {
                p.reference(&gate[r.start * row..r.end * row], &up[r.start * row..r.end * row], o)
            })?
        }
        Op::Add(p) => {
            let (a, b) = (ins(0)?.f32()?, ins(1)?.f32()?);
            let row = shape(0).last().copied().unwrap_or(1);
            rows(ctx, row, row, o, |r, o| {
                p.reference(&a[r.start * row..r.end * row], &b[r.start * row..r.end * row], o)
            })?
        }
        Op::Scale(p) => p.reference(ins(0)?.f32()?, o),
        Op::Softcap(p) => p.reference(ins(0)?.f32()?, o),
        Op::MoeRoute(p) => {
            let bias = if inputs.len() > 1 { Some(ins(1)?.f32()?) } else { None };
            let mut scratch = ctx.moe.lock().map_err(|_| Error::Backend("cpu moe scratch lock poisoned".into()))?;
            p.reference_in(ins(0)?.f32()?, bias, shape(0)[1], &mut scratch.route, o)
        }
        Op::MoeMatmul(p) => {
            let d = p.dims_of(shape(0), shape(1), shape(2));
            let (bias, scale) = p.optional_at(inputs.len());
            let (bias, scale) = (bias.map(|i| ins(i)?.f32()).transpose()?, scale.map(|i| ins(i)?.f32()).transpose()?);
            let w = match repacked[1] {
                Some(r) => moe::Stack::Repacked(r),
                None => moe::Stack::Data(ins(1)?),
            };
            moe::moe_matmul(ctx, p, ins(0)?.f32()?, w, ins(2)?.f32()?, [bias, scale], d, o)?
        }
        Op::Concat(p) => {
            let (m, n) = (shape(0).last().copied().unwrap_or(1), shape(1).last().copied().unwrap_or(1));
            p.reference(ins(0)?.f32()?, ins(1)?.f32()?, [m, n], o)
        }
        Op::MoeCombine(p) => {
            let (y, route) = (ins(0)?.f32()?, ins(1)?.f32()?);
            let (n, two_k) = (shape(0)[1], shape(1)[1]);
            rows(ctx, n, n, o, |r, o| {
                p.reference(
                    &y[r.start * two_k / 2 * n..r.end * two_k / 2 * n],
                    &route[r.start * two_k..r.end * two_k],
                    two_k / 2,
                    o,
                )
            })?
        }
        Op::Argmax(_) | Op::Sample(_) | Op::IndexTopk(_) => {} // ran above, on the u32 view
    }
    Ok(())
}

/// Runs `f` on chunks of the tokens `0..tokens` over the pool (on this thread
/// when there are too few), and returns the first error any chunk met.
fn by_tokens(ctx: &Ctx, tokens: usize, f: impl Fn(std::ops::Range<usize>) -> Result<()> + Sync) -> Result<()> {
    if tokens < 2 || ctx.pool.threads() == 1 {
        return f(0..tokens);
    }
    let chunks = Chunks::new(tokens, tokens.div_ceil(ctx.pool.threads() * 2));
    let failed = std::sync::Mutex::new(None);
    let ok = ctx.pool.run(&|_| {
        while let Some(r) = chunks.next() {
            if let Err(e) = f(r) {
                failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
            }
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None if ok => Ok(()),
        None => Err(Error::Backend("cpu: a worker thread panicked".into())),
    }
}

/// Runs `f(rows, out_rows)` over `out` split into rows of `out_row` values:
/// on the pool when there are many rows, else on this thread.
fn rows(
    ctx: &Ctx,
    out_row: usize,
    _in_row: usize,
    out: &mut [f32],
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) -> Result<()> {
    let n = out.len().checked_div(out_row).unwrap_or(0);
    if n < PARALLEL_ROWS || ctx.pool.threads() == 1 {
        f(0..n, out);
        return Ok(());
    }
    let ptr = matmul::SharedOut(out.as_mut_ptr());
    let chunks = Chunks::new(n, n.div_ceil(ctx.pool.threads() * 4));
    let ok = ctx.pool.run(&|_| {
        while let Some(r) = chunks.next() {
            // SAFETY: the chunks are disjoint rows of `out`
            let o = unsafe { std::slice::from_raw_parts_mut(ptr.at(r.start * out_row), r.len() * out_row) };
            f(r, o);
        }
    });
    if ok { Ok(()) } else { Err(Error::Backend("cpu: a worker thread panicked".into())) }
}
