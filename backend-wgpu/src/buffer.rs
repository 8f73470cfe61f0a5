//! Tensor storage: one wgpu buffer per tensor, recycled through a pool.
//!
//! A forward pass allocates a fresh output for every op; without a pool that
//! is hundreds of buffer creations per step. Dropped buffers go back to a
//! pool keyed by size class and are handed out again, even while commands
//! that used them are still recorded: the queue runs commands in order, so a
//! later op that overwrites a recycled buffer runs after every earlier use.
//!
//! `alloc` promises zeros. A recycled buffer is not cleared at once: it is
//! marked `needs_zero`, and cleared on the GPU only if something reads it
//! before an op has overwritten it whole.
//!
//! u32 tensors keep a host copy, for the index checks ops make before
//! recording. Ids, positions, slots and block tables come from the host
//! (`upload`, `write`), which keeps the copy exact. An op that writes a u32
//! tensor on the device (argmax's ids) marks the copy stale, and the backend
//! reads the buffer back before the copy is used again (`execute` refreshes
//! stale inputs; `host_u32` refuses a stale copy rather than return it).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ferrum_engine::{Error, Result, Tensor, tensor::Buffer};

const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// The buffer size handed out for `bytes` of data: at least 4 bytes (an empty
/// binding is invalid) and a multiple of 4 (copies and bindings need it),
/// rounded up to a size class so buffers recycle: powers of two up to 4 KiB,
/// then steps of an eighth of the power of two (at most 12.5% waste).
pub(crate) fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(4).next_multiple_of(4);
    if b <= 4096 {
        return b.next_power_of_two();
    }
    let step = b.next_power_of_two() / 8;
    b.next_multiple_of(step)
}

/// Idle buffers by size class.
pub(crate) struct BufferPool {
    idle: Mutex<PoolState>,
    /// Most bytes kept idle; a buffer returned beyond this is freed.
    cap_bytes: u64,
    /// Buffers freed so far: caches holding buffers (bind groups) drop their
    /// entries when this moves, so freed memory is not kept alive.
    freed: AtomicU64,
}

#[derive(Default)]
struct PoolState {
    by_size: HashMap<u64, Vec<wgpu::Buffer>>,
    bytes: u64,
}

impl BufferPool {
    pub fn new(cap_bytes: u64) -> Self {
        BufferPool { idle: Mutex::new(PoolState::default()), cap_bytes, freed: AtomicU64::new(0) }
    }

    fn lock(&self) -> Option<MutexGuard<'_, PoolState>> {
        self.idle.lock().ok()
    }

    fn take(&self, size: u64) -> Option<wgpu::Buffer> {
        let mut s = self.lock()?;
        let buf = s.by_size.get_mut(&size)?.pop()?;
        s.bytes -= size;
        Some(buf)
    }

    fn give_back(&self, buf: wgpu::Buffer) {
        let size = buf.size();
        if let Some(mut s) = self.lock()
            && s.bytes + size <= self.cap_bytes
        {
            s.bytes += size;
            s.by_size.entry(size).or_default().push(buf);
            return;
        }
        self.freed.fetch_add(1, Ordering::AcqRel);
    }

    /// How many buffers were freed rather than kept.
    pub fn freed(&self) -> u64 {
        self.freed.load(Ordering::Acquire)
    }

    /// Bytes held idle.
    pub fn idle_bytes(&self) -> u64 {
        self.lock().map_or(0, |s| s.bytes)
    }
}

/// The storage behind a wgpu tensor.
pub(crate) struct GpuBuffer {
    raw: Option<wgpu::Buffer>,
    pool: Arc<BufferPool>,
    needs_zero: AtomicBool,
    /// A u32 tensor's contents, which ops check indices against before
    /// recording, as the reference does (see the module doc).
    host_u32: Option<Mutex<HostCopy>>,
}

/// The host copy of a u32 tensor.
struct HostCopy {
    data: Vec<u32>,
    /// An op wrote the buffer on the device since `data` was set.
    stale: bool,
}

impl HostCopy {
    fn new(data: Vec<u32>) -> Mutex<Self> {
        Mutex::new(HostCopy { data, stale: false })
    }
}

impl Buffer for GpuBuffer {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            self.pool.give_back(raw);
        }
    }
}

impl GpuBuffer {
    /// A zero-filled buffer of at least `bytes`: recycled (cleared lazily) or new.
    pub fn alloc(device: &wgpu::Device, pool: &Arc<BufferPool>, bytes: u64, u32_elems: Option<usize>) -> Self {
        let size = size_class(bytes);
        let (raw, needs_zero) = match pool.take(size) {
            Some(raw) => (raw, true),
            // wgpu zero-initialises new buffers
            None => (device.create_buffer(&desc(size, false)), false),
        };
        GpuBuffer {
            raw: Some(raw),
            pool: pool.clone(),
            needs_zero: AtomicBool::new(needs_zero),
            host_u32: u32_elems.map(|n| HostCopy::new(vec![0; n])),
        }
    }

    /// A pooled buffer of the class for `bytes`, if one is idle. Its contents
    /// are stale: the caller overwrites them through the encoder.
    pub fn recycled(pool: &Arc<BufferPool>, bytes: u64, host_u32: Option<Vec<u32>>) -> Option<Self> {
        let raw = pool.take(size_class(bytes))?;
        Some(GpuBuffer {
            raw: Some(raw),
            pool: pool.clone(),
            needs_zero: AtomicBool::new(true),
            host_u32: host_u32.map(HostCopy::new),
        })
    }

    /// A new buffer holding `data`, written through a mapping at creation (so
    /// no queue write can overtake commands still recorded).
    pub fn with_data(device: &wgpu::Device, pool: &Arc<BufferPool>, data: &[u8], is_u32: bool) -> Result<Self> {
        let raw = mapped_with(device, size_class(data.len() as u64), USAGE, data)?;
        Ok(GpuBuffer {
            raw: Some(raw),
            pool: pool.clone(),
            needs_zero: AtomicBool::new(false),
            host_u32: is_u32.then(|| HostCopy::new(bytemuck::pod_collect_to_vec(data))),
        })
    }

    pub fn raw(&self) -> &wgpu::Buffer {
        self.raw.as_ref().expect("only Drop takes the buffer")
    }

    /// Whether the buffer must be cleared before its contents are used;
    /// clears the mark (the caller records the clear).
    pub fn take_needs_zero(&self) -> bool {
        self.needs_zero.swap(false, Ordering::AcqRel)
    }

    /// An op is about to overwrite every byte: stale contents no longer matter.
    pub fn mark_overwritten(&self) {
        self.needs_zero.store(false, Ordering::Release);
    }

    fn host_copy(&self) -> Result<MutexGuard<'_, HostCopy>> {
        let m = self.host_u32.as_ref().ok_or_else(|| Error::Backend("not a u32 tensor".into()))?;
        m.lock().map_err(|_| Error::Backend("u32 host copy lock poisoned".into()))
    }

    /// The host copy of a u32 tensor; an error if an op wrote the buffer
    /// since (the backend refreshes such inputs before planning an op).
    pub fn host_u32(&self) -> Result<Vec<u32>> {
        let copy = self.host_copy()?;
        if copy.stale {
            return Err(Error::Backend("the host copy of a u32 tensor an op wrote was not read back".into()));
        }
        Ok(copy.data.clone())
    }

    /// Whether this is a u32 tensor whose host copy an op has made stale.
    pub fn host_u32_stale(&self) -> bool {
        self.host_copy().is_ok_and(|c| c.stale)
    }

    /// An op writes this buffer on the device: a u32 host copy is now stale.
    pub fn mark_device_written(&self) {
        if let Ok(mut c) = self.host_copy() {
            c.stale = true;
        }
    }

    /// Keep the host copy of a u32 tensor in step with a write or a read-back
    /// of its whole contents; no-op for other dtypes.
    pub fn set_host_u32(&self, bytes: &[u8]) -> Result<()> {
        if self.host_u32.is_some() {
            *self.host_copy()? = HostCopy { data: bytemuck::pod_collect_to_vec(bytes), stale: false };
        }
        Ok(())
    }
}

/// A staging buffer holding `data` (padded to 4 bytes), to copy from inside
/// the pending batch. Not pooled: wgpu frees it once the copy has run.
pub(crate) fn staging(device: &wgpu::Device, data: &[u8]) -> Result<wgpu::Buffer> {
    let size = (data.len() as u64).next_multiple_of(4).max(4);
    mapped_with(device, size, wgpu::BufferUsages::COPY_SRC, data)
}

fn mapped_with(device: &wgpu::Device, size: u64, usage: wgpu::BufferUsages, data: &[u8]) -> Result<wgpu::Buffer> {
    let raw = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("ferrum tensor"),
        size,
        usage,
        mapped_at_creation: true,
    });
    {
        let mut view =
            raw.get_mapped_range_mut(..).map_err(|e| Error::Backend(format!("mapping a new buffer: {e}")))?;
        view.slice(..data.len()).copy_from_slice(data);
    }
    raw.unmap();
    Ok(raw)
}

fn desc(size: u64, mapped: bool) -> wgpu::BufferDescriptor<'static> {
    wgpu::BufferDescriptor { label: Some("ferrum tensor"), size, usage: USAGE, mapped_at_creation: mapped }
}

/// The wgpu storage of `t`, or an error naming the tensor.
pub(crate) fn gpu_buffer(t: &Tensor) -> Result<&GpuBuffer> {
    t.buffer().as_any().downcast_ref::<GpuBuffer>().ok_or_else(|| Error::Backend(format!("{t:?} is not a wgpu tensor")))
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_fit_and_align() {
        for bytes in [0u64, 1, 3, 4, 5, 100, 4096, 4097, 5000, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let c = size_class(bytes);
            assert!(c >= bytes.max(4) && c.is_multiple_of(4), "{bytes} -> {c}");
            assert!(c as f64 <= (bytes.max(4) as f64 * 1.25).max(4096.0), "{bytes} -> {c} wastes too much");
        }
        assert_eq!(size_class(5000), size_class(5100), "nearby sizes share a class");
    }
}
