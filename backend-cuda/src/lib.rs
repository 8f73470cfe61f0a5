//! # ferrum-backend-cuda
//!
//! `ferrum_engine::Backend` on NVIDIA GPUs through cudarc. The driver, NVRTC
//! and cuBLAS are loaded with dlopen at first use, so the crate builds, links
//! and runs where CUDA is absent: [`open`] then returns `Err` with the reason.
//!
//! - [`device`]: probing libcuda without panicking, the context, the arch.
//! - [`compile`]: NVRTC, once per (kernel source, arch), PTX cached on disk.
//! - `buffer`: one stream-ordered device allocation per tensor; host copies
//!   of u32 tensors for index checks (read back when a kernel, argmax, wrote
//!   the tensor).
//! - `quant`: quantized weights as codes + scales, decoded in the kernels.
//! - `ops`: each op turned into launches of the kernels in `ferrum-kernels`,
//!   with the `#[repr(C)]` mirrors of their parameter structs.
//!
//! One stream: `execute` only queues work; `read` and `sync` wait. Weights
//! and embedding tables may be f32, f16 or bf16 (widened in the kernels) or
//! quantized (NVFP4, MXFP4, FP8, INT8, INT4, and GGUF's Q4_0 .. Q8_0 and
//! Q2_K .. Q6_K blocks as stored, decoded in registers by matmul,
//! gather_rows and moe_matmul); activations are f32.
//! cuBLAS, when libcublas loads, runs prefill GEMMs with float weights
//! (`FERRUM_CUBLAS=0` turns it off, e.g. to test the tiled kernel).

pub mod compile;
pub mod device;

mod buffer;
mod ops;
mod quant;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaContext, CudaFunction, CudaGraph, CudaStream};
use cudarc::nvrtc::Ptx;
use ferrum_engine::backend::{Recording, validate};
use ferrum_engine::ops::{Op, OpKind};
use ferrum_engine::{Backend, DType, Error, Result, Tensor};

use buffer::{CudaBuffer, cuda_buffer, driver_err};

pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    blas: Option<device::Blas>,
    /// Whether the stream is capturing a graph (`begin_recording`).
    recording: Mutex<bool>,
    description: String,
}

/// A captured CUDA graph (`Backend::end_recording`).
struct CudaRecording(Mutex<CudaGraph>);

// SAFETY: the graph is only touched under the mutex (cudarc leaves graphs
// !Send because the driver does not synchronize access to them).
unsafe impl Send for CudaRecording {}
unsafe impl Sync for CudaRecording {}

impl Recording for CudaRecording {
    fn replay(&self) -> Result<()> {
        let graph = self.0.lock().map_err(|_| Error::Backend("cuda graph lock poisoned".into()))?;
        graph.launch().map_err(driver_err("cuGraphLaunch"))
    }
}

/// The backend on device `$FERRUM_CUDA_DEVICE` (default 0), shared by every
/// caller in the process, or why there is none.
pub fn shared() -> Result<Arc<CudaBackend>, String> {
    static SHARED: OnceLock<Result<Arc<CudaBackend>, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let ordinal = std::env::var("FERRUM_CUDA_DEVICE").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
            CudaBackend::open(ordinal).map(Arc::new)
        })
        .clone()
}

/// The CUDA backend, or why it cannot be used here ("libcuda not found (no
/// NVIDIA driver)", no device, no libnvrtc for uncached kernels...). Never
/// panics.
pub fn open() -> Result<Arc<dyn Backend>, String> {
    shared().map(|b| b as _)
}

impl CudaBackend {
    /// Opens device `ordinal`: context, one stream, every kernel compiled (or
    /// taken from the PTX cache) for the device's arch and loaded.
    pub fn open(ordinal: usize) -> Result<Self, String> {
        let ctx = device::context(ordinal)?;
        device::no_panic("opening the CUDA backend", || {
            let arch = device::arch(&ctx)?;
            // One stream orders every use of every buffer, so cudarc's
            // per-buffer events (for several streams) are not needed.
            // SAFETY: only this backend's single stream ever touches its buffers.
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.new_stream().map_err(|e| format!("creating a stream: {e:?}"))?;
            let mut functions = HashMap::new();
            for ((stem, src), (_, entries)) in ferrum_kernels::KERNELS.iter().zip(ferrum_kernels::ENTRY_POINTS) {
                let ptx = compile::cached_ptx(stem, src, &arch)?;
                let module = ctx.load_module(Ptx::from_src(ptx)).map_err(|e| format!("loading {stem}.cu: {e:?}"))?;
                for &e in *entries {
                    let f = module.load_function(e).map_err(|err| format!("{stem}.cu has no kernel {e}: {err:?}"))?;
                    functions.insert(e, f);
                }
            }
            let blas = match device::cublas(&stream) {
                Ok(b) => Some(b),
                Err(why) => {
                    eprintln!("ferrum: cuda: {why}; prefill uses the tiled matmul kernel");
                    None
                }
            };
            let mut description = device::describe(&ctx, &arch);
            if blas.is_none() {
                description.push_str(", no cuBLAS");
            }
            Ok(CudaBackend { ctx: ctx.clone(), stream, functions, blas, recording: Mutex::new(false), description })
        })
    }

    fn launcher(&self) -> ops::Launcher<'_> {
        ops::Launcher { stream: &self.stream, functions: &self.functions, blas: self.blas.as_ref().map(|b| &b.handle) }
    }

    /// Errors the driver recorded where none could be returned (frees in Drop).
    fn check(&self) -> Result<()> {
        self.ctx.check_err().map_err(driver_err("an earlier call"))
    }

    fn recording(&self) -> Result<std::sync::MutexGuard<'_, bool>> {
        self.recording.lock().map_err(|_| Error::Backend("cuda recording lock poisoned".into()))
    }

    /// `Err` while a graph is being captured: `what` would copy or wait.
    fn not_recording(&self, what: &str) -> Result<()> {
        if *self.recording()? {
            return Err(Error::Backend(format!("cuda: {what} while recording a graph")));
        }
        Ok(())
    }

    fn new_tensor(&self, shape: &[usize], dtype: DType, buf: CudaBuffer) -> Tensor {
        Tensor::from_buffer(shape.to_vec(), dtype, Arc::new(buf))
    }

    fn size_of(shape: &[usize], dtype: DType) -> Result<usize> {
        shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.size_bytes()))
            .ok_or_else(|| Error::Backend(format!("tensor {shape:?} {dtype} overflows usize")))
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        "cuda"
    }

    fn device_description(&self) -> String {
        self.description.clone()
    }

    fn supports(&self, op: OpKind, dtype: DType) -> bool {
        ops::supports(op, dtype)
    }

    fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = Self::size_of(shape, dtype)?;
        let u32_elems = (dtype == DType::U32).then(|| shape.iter().product());
        Ok(self.new_tensor(shape, dtype, CudaBuffer::zeros(&self.stream, bytes, u32_elems)?))
    }

    fn upload(&self, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        self.not_recording("upload")?;
        let want = Self::size_of(shape, dtype)?;
        if bytes.len() != want {
            return Err(Error::Backend(format!("upload of {shape:?} {dtype} needs {want} bytes, got {}", bytes.len())));
        }
        Ok(self.new_tensor(shape, dtype, CudaBuffer::with_data(&self.stream, bytes, dtype == DType::U32)?))
    }

    fn upload_quantized(&self, m: &ferrum_engine::quant::QuantizedMatrix) -> Result<Tensor> {
        self.not_recording("upload")?;
        let buf = quant::upload(&self.stream, m)?;
        Ok(Tensor::from_buffer(vec![m.rows(), m.cols()], DType::Quant(m.format()), Arc::new(buf)))
    }

    fn write(&self, dst: &Tensor, bytes: &[u8]) -> Result<()> {
        if bytes.len() != dst.size_bytes() {
            return Err(Error::Backend(format!("write of {} bytes into {dst:?}", bytes.len())));
        }
        self.not_recording("write")?;
        cuda_buffer(dst)?.write(&self.stream, bytes)
    }

    fn read(&self, src: &Tensor) -> Result<Vec<u8>> {
        self.not_recording("read")?;
        let data = cuda_buffer(src)?.read(&self.stream, src.size_bytes())?;
        self.check()?;
        Ok(data)
    }

    fn execute(&self, op: &Op, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
        validate(op, inputs, out)?;
        self.check()?;
        // a u32 output (argmax's ids): its host copy must be read back before use
        cuda_buffer(out)?.mark_device_written()?;
        ops::run(&self.launcher(), op, inputs, out)
    }

    fn memory_available(&self) -> Option<u64> {
        // free device memory now; a failed query refuses nothing
        self.ctx.mem_get_info().ok().map(|(free, _total)| free as u64)
    }

    fn sync(&self) -> Result<()> {
        self.not_recording("sync")?;
        self.stream.synchronize().map_err(driver_err("synchronize"))?;
        self.check()
    }

    /// Captures the stream into a CUDA graph: launches, stream-ordered
    /// allocations and frees, cuBLAS calls (its workspace is preset).
    fn begin_recording(&self) -> Result<bool> {
        let mut recording = self.recording()?;
        if *recording {
            return Err(Error::Backend("cuda: already recording".into()));
        }
        self.check()?;
        // relaxed: other threads may still use the driver (e.g. load weights)
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(driver_err("cuStreamBeginCapture"))?;
        *recording = true;
        Ok(true)
    }

    fn end_recording(&self) -> Result<Box<dyn Recording>> {
        let mut recording = self.recording()?;
        if !*recording {
            return Err(Error::Backend("cuda: not recording".into()));
        }
        *recording = false;
        let graph = self
            .stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(driver_err("cuStreamEndCapture"))?
            .ok_or_else(|| Error::Backend("cuda: the captured graph is empty".into()))?;
        Ok(Box::new(CudaRecording(Mutex::new(graph))))
    }
}
