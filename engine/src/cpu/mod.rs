//! The CPU reference backend: every op as the plain loops in its op file,
//! f32 accumulation, no tricks. It is the oracle other backends are compared
//! with, so it favours being obviously right over being fast.

mod buffer;

use std::sync::Arc;

use crate::backend::{Backend, validate};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::{Op, OpKind, attention::AttentionDims};
use crate::tensor::Tensor;
use buffer::{CpuBuffer, CpuData, read_lock, write_lock};

#[derive(Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn device_description(&self) -> String {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        format!("CPU reference ({threads} hardware threads; large batched matmuls use them all)")
    }

    fn supports(&self, op: OpKind, dtype: DType) -> bool {
        match op {
            OpKind::GatherRows => dtype.is_float(),
            OpKind::Matmul => dtype.is_float() || dtype.is_quantized(),
            OpKind::RmsNorm
            | OpKind::Rope
            | OpKind::KvStore
            | OpKind::Attention
            | OpKind::Glu
            | OpKind::Add
            | OpKind::Scale
            | OpKind::Softcap
            | OpKind::Argmax => dtype == DType::F32,
        }
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
        let ins = inputs.iter().map(|t| read_lock(t)).collect::<Result<Vec<_>>>()?;
        let mut out_data = write_lock(out)?;
        if let Op::Argmax(p) = op {
            // the one op with a u32 output
            p.reference(ins[0].f32()?, inputs[0].shape()[1], out_data.u32_mut()?);
            return Ok(());
        }
        let o = out_data.f32_mut()?;
        match op {
            Op::GatherRows(p) => p.reference(ins[0].floats()?, inputs[0].shape()[1], ins[1].u32()?, o)?,
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
            Op::Argmax(_) => unreachable!("ran above"),
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}
