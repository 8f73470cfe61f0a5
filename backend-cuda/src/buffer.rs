//! Tensor storage: one device allocation per tensor (`CudaSlice<u8>`), made
//! with the driver's stream-ordered allocator, so allocating and freeing per
//! op is cheap and a buffer freed while kernels still use it is released
//! only after they ran (the free is queued on the same stream).
//!
//! Kernels get the raw device pointer; cudarc's per-slice event tracking is
//! off (one stream orders everything).
//!
//! u32 tensors keep a host copy, which ops check indices against before
//! launching. Ids, positions, slots and block tables come from the host
//! (`upload`, `write`), which keeps the copy exact. A kernel that writes a
//! u32 tensor (argmax's ids) marks the copy stale; `host_u32` on a stale
//! copy reads the buffer back first (waiting for the stream), so a check
//! never sees indices the device no longer holds.

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use ferrum_engine::{Error, Result, Tensor, tensor::Buffer};

pub(crate) struct CudaBuffer {
    slice: Mutex<CudaSlice<u8>>,
    /// The device address of `slice`, for kernel arguments.
    ptr: u64,
    /// A u32 tensor's contents on the host (see the module doc).
    host_u32: Option<Mutex<HostCopy>>,
}

/// The host copy of a u32 tensor.
struct HostCopy {
    data: Vec<u32>,
    /// A kernel wrote the buffer since `data` was set: read it back first.
    stale: bool,
}

impl Buffer for CudaBuffer {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub(crate) fn driver_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Backend(format!("cuda: {what}: {e:?}"))
}

impl CudaBuffer {
    fn new(stream: &Arc<CudaStream>, slice: CudaSlice<u8>, host_u32: Option<Vec<u32>>) -> Self {
        let ptr = {
            let (ptr, _sync) = slice.device_ptr(stream);
            ptr
        };
        let host_u32 = host_u32.map(|data| Mutex::new(HostCopy { data, stale: false }));
        CudaBuffer { ptr, slice: Mutex::new(slice), host_u32 }
    }

    /// `bytes` zeros (at least 4: a zero-byte allocation is an error in CUDA).
    pub fn zeros(stream: &Arc<CudaStream>, bytes: usize, u32_elems: Option<usize>) -> Result<Self> {
        let slice = stream.alloc_zeros::<u8>(bytes.max(4)).map_err(driver_err("alloc"))?;
        Ok(Self::new(stream, slice, u32_elems.map(|n| vec![0; n])))
    }

    /// A copy of `data`.
    pub fn with_data(stream: &Arc<CudaStream>, data: &[u8], is_u32: bool) -> Result<Self> {
        let slice = if data.is_empty() { stream.alloc_zeros::<u8>(4) } else { stream.clone_htod(data) }
            .map_err(driver_err("upload"))?;
        Ok(Self::new(stream, slice, is_u32.then(|| bytemuck::pod_collect_to_vec(data))))
    }

    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    fn slice(&self) -> Result<MutexGuard<'_, CudaSlice<u8>>> {
        self.slice.lock().map_err(|_| Error::Backend("cuda buffer lock poisoned".into()))
    }

    /// Overwrite the first `data.len()` bytes (queued on the stream).
    pub fn write(&self, stream: &Arc<CudaStream>, data: &[u8]) -> Result<()> {
        if self.host_u32.is_some() {
            *self.host_copy()? = HostCopy { data: bytemuck::pod_collect_to_vec(data), stale: false };
        }
        if data.is_empty() {
            return Ok(());
        }
        let mut slice = self.slice()?;
        stream.memcpy_htod(data, &mut *slice).map_err(driver_err("write"))
    }

    /// The first `len` bytes, after everything queued before has run.
    pub fn read(&self, stream: &Arc<CudaStream>, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            stream.synchronize().map_err(driver_err("synchronize"))?;
            return Ok(Vec::new());
        }
        let slice = self.slice()?;
        let data = stream.clone_dtoh(&slice.slice(0..len)).map_err(driver_err("read"))?;
        stream.synchronize().map_err(driver_err("synchronize"))?;
        Ok(data)
    }

    fn host_copy(&self) -> Result<MutexGuard<'_, HostCopy>> {
        let m = self.host_u32.as_ref().ok_or_else(|| Error::Backend("not a u32 tensor".into()))?;
        m.lock().map_err(|_| Error::Backend("u32 host copy lock poisoned".into()))
    }

    /// The contents of a u32 tensor: the host copy, read back from the
    /// device first (a wait for the stream) if a kernel wrote the buffer.
    pub fn host_u32(&self, stream: &Arc<CudaStream>) -> Result<Vec<u32>> {
        let mut copy = self.host_copy()?;
        if copy.stale {
            let bytes = self.read(stream, copy.data.len() * 4)?;
            *copy = HostCopy { data: bytemuck::pod_collect_to_vec(&bytes), stale: false };
        }
        Ok(copy.data.clone())
    }

    /// A kernel is about to write this buffer: a u32 host copy is stale.
    pub fn mark_device_written(&self) -> Result<()> {
        if self.host_u32.is_some() {
            self.host_copy()?.stale = true;
        }
        Ok(())
    }
}

/// The CUDA storage of `t`, or an error naming the tensor.
pub(crate) fn cuda_buffer(t: &Tensor) -> Result<&CudaBuffer> {
    t.buffer()
        .as_any()
        .downcast_ref::<CudaBuffer>()
        .ok_or_else(|| Error::Backend(format!("{t:?} is not a cuda tensor")))
}
