//! The CPU reference backend: every op as the plain loops in its op file,
//! f32 accumulation, no tricks. It is the oracle other backends are compared
//! with, so it favours being obviously right over being fast.
//!
//! It records too (`Backend::begin_recording`): a recording is the list of
//! (op, inputs, output) run again on replay. Nothing is faster for it; it is
//! the reference of the recording contract, so the engine's recorded decode
//! steps are tested without a GPU.

mod buffer;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::{Backend, Recording, validate};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::{Op, OpKind, attention::AttentionDims};
use crate::tensor::Tensor;
pub use buffer::{CpuBuffer, CpuData, read_lock, write_lock};

#[derive(Debug, Default)]
pub struct CpuBackend {
    /// The ops recorded so far, while recording.
    recording: Mutex<Option<Vec<Recorded>>>,
}

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend::default()
    }

    fn recording(&self) -> Result<MutexGuard<'_, Option<Vec<Recorded>>>> {
        self.recording.lock().map_err(|_| Error::Backend("cpu recording lock poisoned".into()))
    }
}

/// One recorded `execute`.
#[derive(Debug)]
struct Recorded {
    op: Op,
    inputs: Vec<Tensor>,
    out: Tensor,
}

struct CpuRecording(Vec<Recorded>);

impl Recording for CpuRecording {
    fn replay(&self) -> Result<()> {
        for r in &self.0 {
            compute(&r.op, &r.inputs.iter().collect::<Vec<_>>(), &r.out)?;
        }
        Ok(())
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu-ref"
    }

    fn device_description(&self) -> String {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        format!("CPU reference ({threads} hardware threads; large batched matmuls use them all)")
    }

    fn supports(&self, op: OpKind, dtype: DType) -> bool {
        op.takes(dtype) // every op, every dtype its contract allows
    }

    fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n = shape.iter().product();
        Ok(Tensor::from_buffer(shape.to_vec(), dtype, Arc::new(CpuBuffer::new(CpuData::zeros(dtype, n)?))))
    }

    fn upload(&self, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if bytes.len() != n * dtype.size_bytes() {
            return Err(Error::Backend(format!(
                "upload of {shape:?} {dtype} needs {} bytes, got {}",
                n * dtype.size_bytes(),
                bytes.len()
            )));
        }
        let data = CpuData::from_bytes(dtype, bytes)?;
        Ok(Tensor::from_buffer(shape.to_vec(), dtype, Arc::new(CpuBuffer::new(data))))
    }

    fn upload_quantized(&self, m: &crate::quant::QuantizedMatrix) -> Result<Tensor> {
        let shape = vec![m.rows(), m.cols()];
        Ok(Tensor::from_buffer(shape, DType::Quant(m.format()), Arc::new(CpuBuffer::new(CpuData::Quant(m.clone())))))
    }

    fn write(&self, dst: &Tensor, bytes: &[u8]) -> Result<()> {
        if bytes.len() != dst.size_bytes() {
            return Err(Error::Backend(format!("write of {} bytes into {dst:?}", bytes.len())));
        }
        *write_lock(dst)? = CpuData::from_bytes(dst.dtype(), bytes)?;
        Ok(())
    }

    fn read(&self, src: &Tensor) -> Result<Vec<u8>> {
        Ok(read_lock(src)?.as_bytes()?.to_vec())
    }

    fn execute(&self, op: &Op, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
        validate(op, inputs, out)?;
        if let Some(list) = self.recording()?.as_mut() {
            let inputs = inputs.iter().map(|&t| t.clone()).collect();
            list.push(Recorded { op: op.clone(), inputs, out: out.clone() });
            return Ok(());
        }
        compute(op, inputs, out)
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn begin_recording(&self) -> Result<bool> {
        let mut r = self.recording()?;
        if r.is_some() {
            return Err(Error::Backend("cpu: already recording".into()));
        }
        *r = Some(Vec::new());
        Ok(true)
    }

    fn end_recording(&self) -> Result<Box<dyn Recording>> {
        let list = self.recording()?.take().ok_or_else(|| Error::Backend("cpu: not recording".into()))?;
        Ok(Box::new(CpuRecording(list)))
    }
}

/// Runs `op` (validated) with the reference loops.
fn compute(op: &Op, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
    let ins = inputs.iter().map(|t| read_lock(t)).collect::<Result<Vec<_>>>()?;
    let mut out_data = write_lock(out)?;
    // the ops with a u32 output
    match op {
        Op::Argmax(p) => {
            p.reference(ins[0].f32()?, inputs[0].shape()[1], out_data.u32_mut()?);
            return Ok(());
        }
        Op::Sample(p) => {
            let cols = inputs[0].shape()[1];
            p.reference(ins[0].f32()?, cols, ins[1].f32()?, ins[2].f32()?, out_data.u32_mut()?);
            return Ok(());
        }
        _ => {}
    }
    let o = out_data.f32_mut()?;
    match op {
        Op::GatherRows(p) => {
            let table = inputs[0].shape();
            p.reference(ins[0].weight_rows()?, [table[0], table[1]], ins[1].u32()?, o)?
        }
        Op::RmsNorm(p) => p.reference(ins[0].f32()?, ins[1].f32()?, o),
        Op::Matmul(p) => {
            let bias = ins.get(2).map(|b| b.f32()).transpose()?;
            let dims = [inputs[0].shape()[0], inputs[0].shape()[1], inputs[1].shape()[0]];
            p.reference(ins[0].f32()?, ins[1].weight_rows()?, bias, dims, o)?
        }
        Op::Rope(p) => p.reference(ins[0].f32()?, ins[1].u32()?, ins[2].f32()?, inputs[0].shape()[2], o),
        Op::KvStore(p) => p.reference(ins[0].f32()?, ins[1].u32()?, o)?,
        Op::Attention(p) => {
            let dims = AttentionDims {
                heads: inputs[0].shape()[1],
                kv_heads: inputs[1].shape()[1],
                head_dim: inputs[0].shape()[2],
                max_blocks: inputs[3].shape()[1],
            };
            let [q, k, v, tables, seq, pos] = &ins[..] else { unreachable!("validated: 6 inputs") };
            p.reference(dims, q.f32()?, k.f32()?, v.f32()?, tables.u32()?, seq.u32()?, pos.u32()?, o)?
        }
        Op::Glu(p) => p.reference(ins[0].f32()?, ins[1].f32()?, o),
        Op::Add(p) => p.reference(ins[0].f32()?, ins[1].f32()?, o),
        Op::Scale(p) => p.reference(ins[0].f32()?, o),
        Op::Softcap(p) => p.reference(ins[0].f32()?, o),
        Op::Argmax(_) | Op::Sample(_) => {} // ran above, on the u32 view
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendExt;
    use crate::ops::{Add, Scale};

    #[test]
    fn a_recording_runs_nothing_until_replayed_and_then_sees_new_inputs() {
        let b = CpuBackend::new();
        let (x, y) = (b.upload_f32(&[3], &[1.0, 2.0, 3.0]).unwrap(), b.upload_f32(&[3], &[10.0, 20.0, 30.0]).unwrap());
        let out = b.alloc(&[3], DType::F32).unwrap();
        assert!(b.begin_recording().unwrap());
        let sum = b.run(&Op::Add(Add), &[&x, &y]).unwrap(); // allocated while recording
        b.execute(&Op::Scale(Scale { factor: 2.0 }), &[&sum], &out).unwrap();
        drop(sum); // the recording keeps what it needs
        let rec = b.end_recording().unwrap();
        assert_eq!(b.read_f32(&out).unwrap(), [0.0; 3], "recorded, not run");
        rec.replay().unwrap();
        assert_eq!(b.read_f32(&out).unwrap(), [22.0, 44.0, 66.0]);
        b.write(&x, bytemuck::cast_slice(&[5f32, 6.0, 7.0])).unwrap();
        rec.replay().unwrap();
        assert_eq!(b.read_f32(&out).unwrap(), [30.0, 52.0, 74.0]);
        // ops run directly again after the recording
        let direct = b.run(&Op::Add(Add), &[&x, &y]).unwrap();
        assert_eq!(b.read_f32(&direct).unwrap(), [15.0, 26.0, 37.0]);
        assert!(b.end_recording().is_err(), "not recording");
    }
}
