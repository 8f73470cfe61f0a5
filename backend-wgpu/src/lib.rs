//! # ferrum-backend-wgpu
//!
//! `ferrum_engine::Backend` on wgpu: Vulkan, Metal, DX12, and Mesa's lavapipe
//! (software Vulkan) in CI.
//!
//! - [`device`]: choosing an adapter (real GPUs before software ones) and
//!   opening a device; wgpu errors are collected, never panics.
//! - [`buffer`]: one wgpu buffer per tensor, recycled through a size-class
//!   pool; lazy zeroing; host copies of u32 tensors for index checks (read
//!   back when an op, argmax, wrote the tensor).
//! - [`window`]: tensors larger than one binding are bound through windows of
//!   whole rows at aligned offsets.
//! - [`pipelines`]: compute pipelines cached per (shader, entry, overrides).
//! - [`encoder`]: every op is recorded into one pending command encoder;
//!   `read`/`sync` submit it once and wait.
//! - `ops`: each op turned into dispatches of the WGSL in `ferrum-shaders`.
//!
//! Weights may be f32, f16 or bf16. WGSL has no bf16: bf16 weights are bound
//! as u32 words and widened with a shift. f16 weights use the `enable f16;`
//! shaders when the adapter has SHADER_F16, else are unpacked from u32 words
//! with `unpack2x16float`. Activations are f32.
//!
//! Quantized weights (`upload_quantized`: NVFP4, MXFP4, FP8, INT8, INT4 and
//! GGUF's Q4_0 .. Q6_K blocks) are held as packed codes plus scales in two
//! buffers (layout in `quant.rs`) and decoded in registers by the matmul and
//! gather_rows bodies in `shaders/quant/`, behind one reader per family.

mod buffer;
pub mod device;
mod encoder;
mod ops;
mod pipelines;
mod quant;
mod window;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use ferrum_engine::backend::validate;
use ferrum_engine::ops::{Op, OpKind};
use ferrum_engine::{Backend, DType, Error, Result, Tensor};

use buffer::{BufferPool, GpuBuffer, gpu_buffer};
use device::Gpu;
pub use device::describe_adapters;
use encoder::Recorder;
pub use encoder::Stats;
use pipelines::Pipelines;
use window::BindLimits;

/// How to open the backend. `Default` is what `open()` uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Accept a software adapter (lavapipe) when no GPU is present.
    pub allow_software: bool,
    /// Use `enable f16;` shaders when the adapter has SHADER_F16; when false,
    /// f16 weights are unpacked from u32 words as on adapters without it.
    pub native_f16: bool,
    /// Lower the most bytes one binding covers below the adapter's limit, so
    /// tests reach the windowed paths with small tensors.
    pub max_binding_bytes: Option<u64>,
    /// Raise the binding offset alignment above the adapter's (lavapipe has
    /// 16, most GPUs 256), so tests see the windows a GPU would get.
    pub binding_align: Option<u64>,
    /// Most bytes of idle buffers kept for reuse.
    pub pool_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allow_software: true,
            native_f16: true,
            max_binding_bytes: None,
            binding_align: None,
            pool_bytes: 1 << 30,
        }
    }
}

/// The backend on the best adapter, shared by every caller in the process
/// (opening a device costs ~0.1 s; tests open it many times).
pub fn shared() -> Result<Arc<WgpuBackend>, String> {
    static SHARED: OnceLock<Result<Arc<WgpuBackend>, String>> = OnceLock::new();
    SHARED.get_or_init(|| WgpuBackend::open_with(Options::default()).map(Arc::new)).clone()
}

/// [`shared`] as a `dyn Backend`; may be a software adapter (lavapipe).
pub fn open() -> Result<Arc<dyn Backend>, String> {
    shared().map(|b| b as _)
}

/// [`open`], but refusing a software adapter: what `--backend auto` wants.
pub fn open_hardware() -> Result<Arc<dyn Backend>, String> {
    let backend = shared()?;
    if backend.is_software() {
        return Err(format!("only a software adapter is present: {}", backend.device_description()));
    }
    Ok(backend)
}

pub struct WgpuBackend {
    gpu: Gpu,
    pool: Arc<BufferPool>,
    pipelines: Pipelines,
    recorder: Mutex<Recorder>,
    limits: BindLimits,
}

impl WgpuBackend {
    pub fn open_with(options: Options) -> Result<Self, String> {
        let gpu = device::open(options.allow_software, options.native_f16)?;
        let l = &gpu.limits;
        let adapter_max = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
        let adapter_align = l.min_storage_buffer_offset_alignment as u64;
        let limits = BindLimits {
            max_binding: options.max_binding_bytes.map_or(adapter_max, |m| m.min(adapter_max)),
            // a multiple of the adapter's alignment is still aligned
            align: options.binding_align.map_or(adapter_align, |a| a.next_multiple_of(adapter_align)),
            max_groups: l.max_compute_workgroups_per_dimension,
        };
        if limits.max_binding < limits.align {
            return Err(format!(
                "a binding of {} bytes is below the offset alignment {}",
                limits.max_binding, limits.align
            ));
        }
        Ok(WgpuBackend {
            gpu,
            pool: Arc::new(BufferPool::new(options.pool_bytes)),
            pipelines: Pipelines::default(),
            recorder: Mutex::new(Recorder::default()),
            limits,
        })
    }

    /// Whether the adapter is a software rasteriser (lavapipe, WARP...).
    pub fn is_software(&self) -> bool {
        self.gpu.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Submits, read-backs and dispatches so far.
    pub fn stats(&self) -> Stats {
        self.recorder.lock().map(|r| r.stats).unwrap_or_default()
    }

    /// Pipelines compiled so far (each once).
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.count()
    }

    /// Bytes of idle buffers held for reuse.
    pub fn pooled_bytes(&self) -> u64 {
        self.pool.idle_bytes()
    }

    fn recorder(&self) -> Result<MutexGuard<'_, Recorder>> {
        self.recorder.lock().map_err(|_| Error::Backend("recorder lock poisoned".into()))
    }

    fn check(&self) -> Result<()> {
        self.gpu.check().map_err(Error::Backend)
    }

    fn ctx(&self) -> ops::Ctx<'_> {
        ops::Ctx {
            limits: self.limits,
            native_f16: self.gpu.native_f16,
            device: &self.gpu.device,
            pool: &self.pool,
            scratch: Default::default(),
        }
    }

    /// Records a clear of `buf` if it was recycled and never overwritten.
    fn zero_if_needed(&self, rec: &mut Recorder, buf: &GpuBuffer) {
        if buf.take_needs_zero() {
            rec.encoder(&self.gpu.device).clear_buffer(buf.raw(), 0, None);
        }
    }

    /// Overwrites `buf` with `bytes` through a staging copy recorded in the
    /// pending batch, so commands recorded earlier still see the old contents.
    fn copy_in(&self, buf: &GpuBuffer, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let staging = buffer::staging(&self.gpu.device, bytes)?;
        let mut rec = self.recorder()?;
        buf.mark_overwritten();
        rec.encoder(&self.gpu.device).copy_buffer_to_buffer(&staging, 0, buf.raw(), 0, staging.size());
        Ok(())
    }

    fn new_tensor(&self, shape: &[usize], dtype: DType, buf: GpuBuffer) -> Tensor {
        Tensor::from_buffer(shape.to_vec(), dtype, Arc::new(buf))
    }

    fn check_size(&self, shape: &[usize], dtype: DType) -> Result<u64> {
        let elems = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let bytes = elems.and_then(|n| n.checked_mul(dtype.size_bytes())).map(|b| b as u64);
        match bytes {
            Some(b) if b <= self.gpu.limits.max_buffer_size => Ok(b),
            _ => Err(Error::Backend(format!(
                "tensor {shape:?} {dtype} is larger than the adapter's max_buffer_size ({} bytes)",
                self.gpu.limits.max_buffer_size
            ))),
        }
    }
}

impl Backend for WgpuBackend {
    fn name(&self) -> &str {
        "wgpu"
    }

    fn device_description(&self) -> String {
        self.gpu.description()
    }

    fn supports(&self, op: OpKind, dtype: DType) -> bool {
        ops::supports(op, dtype, self.gpu.native_f16, self.gpu.f16_in_f32)
    }

    fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = self.check_size(shape, dtype)?;
        let u32_elems = (dtype == DType::U32).then(|| shape.iter().product());
        Ok(self.new_tensor(shape, dtype, GpuBuffer::alloc(&self.gpu.device, &self.pool, bytes, u32_elems)))
    }

    fn upload(&self, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        let want = self.check_size(shape, dtype)?;
        if bytes.len() as u64 != want {
            return Err(Error::Backend(format!("upload of {shape:?} {dtype} needs {want} bytes, got {}", bytes.len())));
        }
        let host_u32 = (dtype == DType::U32).then(|| bytemuck::pod_collect_to_vec(bytes));
        // An idle buffer if there is one (so per-step uploads do not grow the
        // pool), filled inside the batch; else a new one filled at creation.
        let buf = match GpuBuffer::recycled(&self.pool, want, host_u32) {
            Some(buf) => {
                self.copy_in(&buf, bytes)?;
                buf
            }
            None => GpuBuffer::with_data(&self.gpu.device, &self.pool, bytes, dtype == DType::U32)?,
        };
        Ok(self.new_tensor(shape, dtype, buf))
    }

    fn upload_quantized(&self, m: &ferrum_engine::quant::QuantizedMatrix) -> Result<Tensor> {
        self.check()?;
        let buf = quant::upload(&self.gpu.device, &self.pool, self.gpu.limits.max_buffer_size, m)?;
        Ok(Tensor::from_buffer(vec![m.rows(), m.cols()], DType::Quant(m.format()), Arc::new(buf)))
    }

    fn write(&self, dst: &Tensor, bytes: &[u8]) -> Result<()> {
        if bytes.len() != dst.size_bytes() {
            return Err(Error::Backend(format!("write of {} bytes into {dst:?}", bytes.len())));
        }
        let buf = gpu_buffer(dst)?;
        buf.set_host_u32(bytes)?;
        self.copy_in(buf, bytes)
    }

    fn read(&self, src: &Tensor) -> Result<Vec<u8>> {
        let buf = gpu_buffer(src)?;
        let len = src.size_bytes();
        let padded = (len as u64).next_multiple_of(4).max(4);
        let staging = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ferrum read-back"),
            size: padded,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut rec = self.recorder()?;
            self.zero_if_needed(&mut rec, buf);
            rec.encoder(&self.gpu.device).copy_buffer_to_buffer(buf.raw(), 0, &staging, 0, padded);
            rec.flush(&self.gpu.queue);
            rec.stats.readbacks += 1;
            rec.stats.readback_bytes += len as u64;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.gpu
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Backend(format!("waiting for the GPU: {e}")))?;
        self.check()?;
        rx.recv()
            .map_err(|_| Error::Backend("read-back was never mapped".into()))?
            .map_err(|e| Error::Backend(format!("mapping the read-back: {e}")))?;
        let data = {
            let view = staging.get_mapped_range(..).map_err(|e| Error::Backend(format!("read-back range: {e}")))?;
            view[..len].to_vec()
        };
        staging.unmap();
        if buf.host_u32_stale() {
            buf.set_host_u32(&data)?;
        }
        Ok(data)
    }

    fn execute(&self, op: &Op, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
        validate(op, inputs, out)?;
        self.check()?;
        // u32 inputs an op wrote (argmax's ids) are read back, a submit and a
        // wait, so their indices are checked against what the device holds
        for t in inputs.iter().filter(|t| t.dtype() == DType::U32) {
            if gpu_buffer(t)?.host_u32_stale() {
                self.read(t)?;
            }
        }
        // `ctx` outlives the recorder lock: its scratch buffers are recorded first
        let ctx = self.ctx();
        let dispatches = ops::plan(op, inputs, out, &ctx)?;
        let out_buf = gpu_buffer(out)?;
        // a u32 output's host copy no longer says what the buffer holds
        out_buf.mark_device_written();
        let mut rec = self.recorder()?;
        // quantized weights are written whole at upload and never recycled
        for t in inputs.iter().filter(|t| !t.dtype().is_quantized()) {
            self.zero_if_needed(&mut rec, gpu_buffer(t)?);
        }
        if !op.kind().contract().in_place {
            out_buf.mark_overwritten();
        } else {
            self.zero_if_needed(&mut rec, out_buf);
        }
        rec.record(&self.gpu.device, &self.pipelines, &dispatches, self.pool.freed())
    }

    fn lost(&self) -> Option<String> {
        self.gpu.lost.lock().map_or_else(|_| Some("the device-lost lock is poisoned".into()), |l| l.clone())
    }

    fn sync(&self) -> Result<()> {
        let pending = {
            let mut rec = self.recorder()?;
            let pending = rec.has_pending();
            rec.flush(&self.gpu.queue);
            pending
        };
        if pending {
            self.gpu
                .device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Backend(format!("waiting for the GPU: {e}")))?;
        }
        self.check()
    }
}
