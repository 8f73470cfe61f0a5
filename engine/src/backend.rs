//! The seam between model code and hardware: a small trait of memory plus
//! execute, in the spirit of ggml's backend vtable. Ops are data (`Op`), so
//! adding an op never adds a method here.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::{Op, OpKind, TensorSpec};
use crate::tensor::Tensor;

/// A place where tensors live and ops run.
///
/// Every method reports failure as `Err`; a backend never panics on bad input.
/// Execution may be asynchronous: `read` and `sync` are the points where the
/// host waits.
pub trait Backend: Send + Sync {
    /// Short name used on the command line: "cpu", "wgpu", "cuda".
    fn name(&self) -> &str;

    /// Human-readable description of the device (adapter name, GPU model...).
    fn device_description(&self) -> String;

    /// Whether `op` runs here when its primary operand has `dtype` (the weight
    /// for matmul and gather_rows, the activation otherwise).
    fn supports(&self, op: OpKind, dtype: DType) -> bool;

    /// A new zero-filled tensor.
    fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor>;

    /// A new tensor holding `bytes` (little-endian elements of `dtype`).
    fn upload(&self, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor>;

    /// A packed weight matrix of dtype `DType::Quant(m.format())`, shape
    /// [rows, cols]. Backends without quantized matmuls keep the default.
    fn upload_quantized(&self, m: &crate::quant::QuantizedMatrix) -> Result<Tensor> {
        Err(Error::Backend(format!("backend {} cannot hold {} weights", self.name(), m.format())))
    }

    /// Overwrite the whole of `dst` with `bytes`.
    fn write(&self, dst: &Tensor, bytes: &[u8]) -> Result<()>;

    /// Copy the whole of `src` back to the host.
    fn read(&self, src: &Tensor) -> Result<Vec<u8>>;

    /// Run `op` on `inputs`, writing `out`. `out` must match
    /// `op.output_spec(inputs)` and must not share a buffer with any input.
    fn execute(&self, op: &Op, inputs: &[&Tensor], out: &Tensor) -> Result<()>;

    /// Wait until all submitted work has finished.
    fn sync(&self) -> Result<()>;

    /// Starts a recording (on CUDA, a graph): until `end_recording`,
    /// `execute` records its op instead of running it. Only `alloc` and
    /// `execute` may be called meanwhile, and no tensor made before may be
    /// dropped. A recording replays the same ops on the same tensors, whose
    /// contents may change through `write` between replays; the host checks
    /// `execute` makes (index ranges) ran once, at recording time, so the
    /// caller checks what it writes. `Ok(false)`: this backend does not
    /// record, and nothing changed.
    fn begin_recording(&self) -> Result<bool> {
        Ok(false)
    }

    /// Ends the recording that `begin_recording` started; called even when an
    /// op failed meanwhile, to leave recording mode.
    fn end_recording(&self) -> Result<Box<dyn Recording>> {
        Err(Error::Backend(format!("backend {} does not record", self.name())))
    }
    /// Why this backend can run nothing more (its GPU was lost or reset);
    /// `None` while it works. The serving engine asks after a failed step,
    /// to tell a failing request from a failing device.
    fn lost(&self) -> Option<String> {
        None
    }

    /// Bytes a model may still take on this device, if the backend can
    /// tell: a model that needs more is refused before it loads
    /// ([`crate::memory::MemoryNeed::check`]).
    fn memory_available(&self) -> Option<u64> {
        None
    }
}

/// Ops recorded by `Backend::begin_recording` .. `end_recording`.
pub trait Recording: Send + Sync {
    /// Runs the recorded ops again, in order (queued like `execute`).
    fn replay(&self) -> Result<()>;
}

/// Conveniences every caller of a backend wants; written once over the trait.
pub trait BackendExt: Backend {
    /// Allocate the output `op` produces from `inputs`, run it, return it.
    fn run(&self, op: &Op, inputs: &[&Tensor]) -> Result<Tensor> {
        let spec = op.output_spec(&specs(inputs))?;
        let out = self.alloc(&spec.shape, spec.dtype)?;
        self.execute(op, inputs, &out)?;
        Ok(out)
    }

    fn upload_f32(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        self.upload(shape, DType::F32, bytemuck::cast_slice(data))
    }

    fn upload_u32(&self, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        self.upload(shape, DType::U32, bytemuck::cast_slice(data))
    }

    /// Read any float tensor back as f32.
    fn read_f32(&self, src: &Tensor) -> Result<Vec<f32>> {
        let bytes = self.read(src)?;
        Ok(match src.dtype() {
            DType::F32 => bytemuck::pod_collect_to_vec(&bytes),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&bytes).into_iter().map(f32::from).collect(),
            DType::BF16 => bytemuck::pod_collect_to_vec::<u8, half::bf16>(&bytes).into_iter().map(f32::from).collect(),
            DType::F8E4M3 => bytes.iter().map(|&b| crate::quant::fp8::decode(b)).collect(),
            DType::U32 | DType::Quant(_) => {
                return Err(Error::Backend(format!("read_f32 on a {} tensor", src.dtype())));
            }
        })
    }

    fn read_u32(&self, src: &Tensor) -> Result<Vec<u32>> {
        if src.dtype() != DType::U32 {
            return Err(Error::Backend(format!("read_u32 on a {} tensor", src.dtype())));
        }
        Ok(bytemuck::pod_collect_to_vec(&self.read(src)?))
    }
}

impl<B: Backend + ?Sized> BackendExt for B {}

pub fn specs(tensors: &[&Tensor]) -> Vec<TensorSpec> {
    tensors.iter().map(|t| TensorSpec::of(t)).collect()
}

/// Checks what every backend must check before running an op: the output has
/// the shape the op's rule gives, and does not alias an input.
pub fn validate(op: &Op, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
    let spec = op.output_spec(&specs(inputs))?;
    if spec.shape != out.shape() || spec.dtype != out.dtype() {
        return Err(Error::op(
            op.kind().name(),
            format!("output is {:?} {} but the op makes {:?} {}", out.shape(), out.dtype(), spec.shape, spec.dtype),
        ));
    }
    if inputs.iter().any(|t| t.same_buffer(out)) {
        return Err(Error::op(op.kind().name(), "output aliases an input"));
    }
    Ok(())
}
