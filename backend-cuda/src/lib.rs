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
//! - `ops`: each op turned into launches of the kernels in `ferrum-kernels`,
//!   with the `#[repr(C)]` mirrors of their parameter structs.
//!
//! One stream: `execute` only queues work; `read` and `sync` wait. Weights
//! may be f32, f16 or bf16 (widened in the kernels); activations are f32.

pub mod compile;
pub mod device;

mod buffer;
mod ops;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaStream};
use cudarc::nvrtc::Ptx;
use ferrum_engine::backend::validate;
use ferrum_engine::ops::{Op, OpKind};
use ferrum_engine::{Backend, DType, Error, Result, Tensor};

use buffer::{CudaBuffer, cuda_buffer, driver_err};

pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    description: String,
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
            let description = device::describe(&ctx, &arch);
            Ok(CudaBackend { ctx: ctx.clone(), stream, functions, description })
        })
    }

    fn launcher(&self) -> ops::Launcher<'_> {
        ops::Launcher { stream: &self.stream, functions: &self.functions }
    }

    /// Errors the driver recorded where none could be returned (frees in Drop).
    fn check(&self) -> Result<()> {
        self.ctx.check_err().map_err(driver_err("an earlier call"))
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
        let want = Self::size_of(shape, dtype)?;
        if bytes.len() != want {
            return Err(Error::Backend(format!("upload of {shape:?} {dtype} needs {want} bytes, got {}", bytes.len())));
        }
        Ok(self.new_tensor(shape, dtype, CudaBuffer::with_data(&self.stream, bytes, dtype == DType::U32)?))
    }

    fn write(&self, dst: &Tensor, bytes: &[u8]) -> Result<()> {
        if bytes.len() != dst.size_bytes() {
            return Err(Error::Backend(format!("write of {} bytes into {dst:?}", bytes.len())));
        }
        cuda_buffer(dst)?.write(&self.stream, bytes)
    }

    fn read(&self, src: &Tensor) -> Result<Vec<u8>> {
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

    fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_err("synchronize"))?;
        self.check()
    }
}
