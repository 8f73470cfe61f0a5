//! Finding a GPU without ever panicking. cudarc with `dynamic-loading`
//! panics when libcuda is missing (PLATFORM.md 2), so libcuda is probed with
//! dlopen first, and every first driver call is wrapped in `catch_unwind` as
//! a belt.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, sys::CUdevice_attribute};

/// Runs `f`, turning a panic (a missing library or symbol) into `Err`.
pub(crate) fn no_panic<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!("{what} panicked: {msg}"))
    })
}

/// Whether libcuda (the driver) can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only dlopen()s candidate library names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Device `ordinal`'s context, or why there is none.
pub(crate) fn context(ordinal: usize) -> Result<Arc<CudaContext>, String> {
    if !driver_present() {
        return Err("libcuda not found (no NVIDIA driver)".into());
    }
    let count =
        no_panic("cuDeviceGetCount", || CudaContext::device_count().map_err(|e| format!("cuDeviceGetCount: {e:?}")))?;
    if count <= 0 {
        return Err("the NVIDIA driver sees no CUDA device".into());
    }
    if ordinal >= count as usize {
        return Err(format!("CUDA device {ordinal} requested, {count} present"));
    }
    no_panic("creating a CUDA context", || CudaContext::new(ordinal).map_err(|e| format!("cuCtxCreate: {e:?}")))
}

/// "sm_XY" for the context's device.
pub(crate) fn arch(ctx: &CudaContext) -> Result<String, String> {
    let (major, minor) = ctx.compute_capability().map_err(|e| format!("compute capability: {e:?}"))?;
    Ok(format!("sm_{major}{minor}"))
}

/// "NVIDIA H200 (sm_90, 141 GiB, 132 SMs)".
pub(crate) fn describe(ctx: &CudaContext, arch: &str) -> String {
    let name = ctx.name().unwrap_or_else(|_| "unknown NVIDIA GPU".into());
    let gib = ctx.total_mem().map_or(0.0, |b| b as f64 / (1u64 << 30) as f64);
    let sms = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).unwrap_or(0);
    format!("{name} ({arch}, {gib:.0} GiB, {sms} SMs)")
}

/// cuBLAS's workspace: NVIDIA's recommendation for Hopper. Given up front,
/// so cuBLAS never allocates while a CUDA graph is being captured.
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// A cuBLAS handle on `stream` and its workspace.
pub(crate) struct Blas {
    pub handle: CudaBlas,
    _workspace: CudaSlice<u8>,
}

/// cuBLAS on `stream`, or why not (libcublas absent, turned off with
/// `FERRUM_CUBLAS=0`, or failing to start).
pub(crate) fn cublas(stream: &Arc<CudaStream>) -> Result<Blas, String> {
    if std::env::var("FERRUM_CUBLAS").is_ok_and(|v| v == "0") {
        return Err("cuBLAS turned off (FERRUM_CUBLAS=0)".into());
    }
    // SAFETY: only dlopen()s candidate library names.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err("libcublas not found".into());
    }
    no_panic("creating a cuBLAS handle", || {
        let handle = CudaBlas::new(stream.clone()).map_err(|e| format!("cublasCreate: {e:?}"))?;
        let workspace = stream.alloc_zeros::<u8>(CUBLAS_WORKSPACE_BYTES).map_err(|e| format!("{e:?}"))?;
        let ptr = {
            let (ptr, _sync) = workspace.device_ptr(stream);
            ptr
        };
        // SAFETY: the workspace lives as long as the handle (both in `Blas`).
        unsafe { cudarc::cublas::sys::cublasSetWorkspace_v2(*handle.handle(), ptr as *mut _, CUBLAS_WORKSPACE_BYTES) }
            .result()
            .map_err(|e| format!("cublasSetWorkspace: {e:?}"))?;
        Ok(Blas { handle, _workspace: workspace })
    })
}
