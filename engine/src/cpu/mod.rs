//! The CPU reference backend: every op as the plain loops in its op file,
//! f32 accumulation, no tricks. It is the oracle other backends are compared
//! with, so it favours being obviously right over being fast.
//!
//! It records too (`Backend::begin_recording`): a recording is the list of
//! (op, inputs, output) run again on replay. Nothing is faster for it; it is
//! the reference of the recording contract, so the engine's recorded decode
//! steps are tested without a GPU.

mod buffer;
mod recorder;

use crate::backend::{Backend, Recording, validate};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::{Attention, Op, OpKind, attention::AttentionDims};
use crate::tensor::Tensor;
pub use buffer::{CpuBuffer, CpuData, quantized_tensor, read_lock, tensor_from_bytes, write_lock, zeroed_tensor};
pub use recorder::{OpRecorder, RecordedOp};

#[derive(Debug, Default)]
pub struct CpuBackend {
    recorder: OpRecorder,
}

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend::default()
    }
}

struct CpuRecording(Vec<RecordedOp>);

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
        zeroed_tensor(shape, dtype)
    }

    fn upload(&self, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        tensor_from_bytes(shape, dtype, bytes)
    }

    fn upload_quantized(&self, m: &crate::quant::QuantizedMatrix) -> Result<Tensor> {
        Ok(quantized_tensor(m))
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
        if self.recorder.record(op, inputs, out)? {
            return Ok(());
        }
        compute(op, inputs, out)
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn memory_available(&self) -> Option<u64> {
        crate::memory::host_available()
    }

    fn begin_recording(&self) -> Result<bool> {
        self.recorder.begin()
    }

    fn end_recording(&self) -> Result<Box<dyn Recording>> {
        Ok(Box::new(CpuRecording(self.recorder.end()?)))
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
        Op::IndexTopk(p) => {
            let [q, w, k, tables, seq, pos] = &ins[..] else { unreachable!("validated: 6 inputs") };
            let max_blocks = inputs[3].shape()[1];
            let (tables, seq, pos) = (tables.u32()?, seq.u32()?, pos.u32()?);
            return p.reference(q.f32()?, w.f32()?, k.floats()?, max_blocks, tables, seq, pos, out_data.u32_mut()?);
        }
        // the one with a cache output, in any cache dtype
        Op::KvStore(p) => return p.reference(ins[0].f32()?, ins[1].u32()?, out_data.cache_mut()?),
        _ => {}
    }
    let o = out_data.f32_mut()?;
    match op {
        Op::GatherRows(p) => {
            let table = inputs[0].shape();
            p.reference(ins[0].weight_rows()?, [table[0], table[1]], ins[1].u32()?, o)?
        }
        Op::RmsNorm(p) => p.reference(ins[0].f32()?, ins[1].f32()?, ins.get(2).map(|b| b.f32()).transpose()?, o),
        Op::Matmul(p) => {
            let bias = ins.get(2).map(|b| b.f32()).transpose()?;
            let dims = [inputs[0].shape()[0], inputs[0].shape()[1], inputs[1].shape()[0]];
            p.reference(ins[0].f32()?, ins[1].weight_rows()?, bias, dims, o)?
        }
        Op::Rope(p) => p.reference(ins[0].f32()?, ins[1].u32()?, ins[2].f32()?, inputs[0].shape()[2], o),
        Op::KvStore(_) => unreachable!("written above"),
        Op::Attention(p) => {
            let dims = AttentionDims {
                heads: inputs[0].shape()[1],
                kv_heads: inputs[1].shape()[1],
                head_dim: inputs[0].shape()[2],
                max_blocks: inputs[3].shape()[1],
            };
            let [q, k, v, tables, seq, pos] = &ins[..6] else { unreachable!("validated: 6 to 8 inputs") };
            let dtypes: Vec<_> = inputs.iter().map(|t| t.dtype()).collect();
            let (sinks, selected) = Attention::optional_inputs(&dtypes)?;
            let sinks = sinks.map(|i| ins[i].f32()).transpose()?;
            let selected = selected.map(|i| ins[i].u32()).transpose()?;
            let (k, v) = (k.floats()?, v.floats()?);
            p.reference(dims, q.f32()?, k, v, tables.u32()?, seq.u32()?, pos.u32()?, sinks, selected, o)?
        }
        Op::Glu(p) => p.reference(ins[0].f32()?, ins[1].f32()?, o),
        Op::Add(p) => p.reference(ins[0].f32()?, ins[1].f32()?, o),
        Op::Scale(p) => p.reference(ins[0].f32()?, o),
        Op::Softcap(p) => p.reference(ins[0].f32()?, o),
        Op::MoeRoute(p) => {
            let bias = ins.get(1).map(|b| b.f32()).transpose()?;
            p.reference(ins[0].f32()?, bias, inputs[0].shape()[1], o)
        }
        Op::MoeMatmul(p) => {
            let d = p.dims_of(inputs[0].shape(), inputs[1].shape(), inputs[2].shape());
            let (bias, scale) = p.optional(&ins);
            let (bias, scale) = (bias.map(|b| b.f32()).transpose()?, scale.map(|s| s.f32()).transpose()?);
            p.reference(ins[0].f32()?, ins[1].weight_rows()?, ins[2].f32()?, bias, scale, d, o)?
        }
        Op::MoeCombine(p) => p.reference(ins[0].f32()?, ins[1].f32()?, inputs[1].shape()[1] / 2, o),
        Op::Concat(p) => {
            let last = |i: usize| inputs[i].shape().last().copied().unwrap_or(1);
            p.reference(ins[0].f32()?, ins[1].f32()?, [last(0), last(1)], o)
        }
        Op::Argmax(_) | Op::Sample(_) | Op::IndexTopk(_) => {} // ran above, on the u32 view
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
