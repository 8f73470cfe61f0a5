//! Host memory for the CPU reference backend: a typed vector behind a lock.

use std::any::Any;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use half::{bf16, f16};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::{CacheSliceMut, FloatSlice, WeightRows};
use crate::quant::QuantizedMatrix;
use crate::tensor::{Buffer, Tensor};

#[derive(Debug)]
pub enum CpuData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    /// float8_e4m3fn codes (a KV cache)
    F8E4M3(Vec<u8>),
    U32(Vec<u32>),
    Quant(QuantizedMatrix),
}

impl CpuData {
    pub fn zeros(dtype: DType, n: usize) -> Result<Self> {
        Ok(match dtype {
            DType::F32 => CpuData::F32(vec![0.0; n]),
            DType::F16 => CpuData::F16(vec![f16::ZERO; n]),
            DType::BF16 => CpuData::BF16(vec![bf16::ZERO; n]),
            DType::F8E4M3 => CpuData::F8E4M3(vec![0; n]),
            DType::U32 => CpuData::U32(vec![0; n]),
            DType::Quant(f) => return Err(Error::Backend(format!("{f} tensors come only from upload_quantized"))),
        })
    }

    /// Copies `bytes` (little-endian) in; works whatever their alignment.
    pub fn from_bytes(dtype: DType, bytes: &[u8]) -> Result<Self> {
        Ok(match dtype {
            DType::F32 => CpuData::F32(bytemuck::pod_collect_to_vec(bytes)),
            DType::F16 => CpuData::F16(bytemuck::pod_collect_to_vec(bytes)),
            DType::BF16 => CpuData::BF16(bytemuck::pod_collect_to_vec(bytes)),
            DType::F8E4M3 => CpuData::F8E4M3(bytes.to_vec()),
            DType::U32 => CpuData::U32(bytemuck::pod_collect_to_vec(bytes)),
            DType::Quant(f) => return Err(Error::Backend(format!("{f} tensors come only from upload_quantized"))),
        })
    }

    pub fn as_bytes(&self) -> Result<&[u8]> {
        Ok(match self {
            CpuData::F32(v) => bytemuck::cast_slice(v),
            CpuData::F16(v) => bytemuck::cast_slice(v),
            CpuData::BF16(v) => bytemuck::cast_slice(v),
            CpuData::F8E4M3(v) => v,
            CpuData::U32(v) => bytemuck::cast_slice(v),
            CpuData::Quant(m) => return Err(Error::Backend(format!("{} weights cannot be read back", m.format()))),
        })
    }

    /// A matmul's weight: float rows, or packed rows dequantized one at a time.
    pub fn weight_rows(&self) -> Result<WeightRows<'_>> {
        match self {
            CpuData::Quant(m) => Ok(WeightRows::Quant(m)),
            other => Ok(WeightRows::Float(other.floats()?)),
        }
    }

    pub fn floats(&self) -> Result<FloatSlice<'_>> {
        match self {
            CpuData::F32(v) => Ok(FloatSlice::F32(v)),
            CpuData::F16(v) => Ok(FloatSlice::F16(v)),
            CpuData::BF16(v) => Ok(FloatSlice::BF16(v)),
            CpuData::F8E4M3(v) => Ok(FloatSlice::F8E4M3(v)),
            CpuData::U32(_) => Err(Error::Backend("expected a float tensor, got u32".into())),
            CpuData::Quant(m) => Err(Error::Backend(format!("expected a float tensor, got {}", m.format()))),
        }
    }

    pub fn f32(&self) -> Result<&[f32]> {
        match self {
            CpuData::F32(v) => Ok(v),
            _ => Err(Error::Backend("expected an f32 tensor".into())),
        }
    }

    pub fn f32_mut(&mut self) -> Result<&mut [f32]> {
        match self {
            CpuData::F32(v) => Ok(v),
            _ => Err(Error::Backend("expected an f32 tensor".into())),
        }
    }

    /// A KV cache's elements, to write in its dtype.
    pub fn cache_mut(&mut self) -> Result<CacheSliceMut<'_>> {
        match self {
            CpuData::F32(v) => Ok(CacheSliceMut::F32(v)),
            CpuData::F16(v) => Ok(CacheSliceMut::F16(v)),
            CpuData::BF16(v) => Ok(CacheSliceMut::BF16(v)),
            CpuData::F8E4M3(v) => Ok(CacheSliceMut::F8E4M3(v)),
            _ => Err(Error::Backend("expected a cache tensor".into())),
        }
    }

    pub fn u32_mut(&mut self) -> Result<&mut [u32]> {
        match self {
            CpuData::U32(v) => Ok(v),
            _ => Err(Error::Backend("expected a u32 tensor".into())),
        }
    }

    pub fn u32(&self) -> Result<&[u32]> {
        match self {
            CpuData::U32(v) => Ok(v),
            _ => Err(Error::Backend("expected a u32 tensor".into())),
        }
    }
}

#[derive(Debug)]
pub struct CpuBuffer(RwLock<CpuData>);

impl CpuBuffer {
    pub fn new(data: CpuData) -> Self {
        CpuBuffer(RwLock::new(data))
    }
}

impl Buffer for CpuBuffer {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A zero-filled host tensor: the CPU backends' `alloc`.
pub fn zeroed_tensor(shape: &[usize], dtype: DType) -> Result<Tensor> {
    let n = shape.iter().product();
    Ok(Tensor::from_buffer(shape.to_vec(), dtype, std::sync::Arc::new(CpuBuffer::new(CpuData::zeros(dtype, n)?))))
}

/// A host tensor holding `bytes`: the CPU backends' `upload`.
pub fn tensor_from_bytes(shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    if bytes.len() != n * dtype.size_bytes() {
        return Err(Error::Backend(format!(
            "upload of {shape:?} {dtype} needs {} bytes, got {}",
            n * dtype.size_bytes(),
            bytes.len()
        )));
    }
    let data = CpuData::from_bytes(dtype, bytes)?;
    Ok(Tensor::from_buffer(shape.to_vec(), dtype, std::sync::Arc::new(CpuBuffer::new(data))))
}

/// A packed weight as a host tensor: the CPU backends' `upload_quantized`.
pub fn quantized_tensor(m: &QuantizedMatrix) -> Tensor {
    let shape = vec![m.rows(), m.cols()];
    Tensor::from_buffer(shape, DType::Quant(m.format()), std::sync::Arc::new(CpuBuffer::new(CpuData::Quant(m.clone()))))
}

fn cpu_buffer(t: &Tensor) -> Result<&CpuBuffer> {
    t.buffer()
        .as_any()
        .downcast_ref::<CpuBuffer>()
        .ok_or_else(|| Error::Backend(format!("{t:?} does not live on the cpu backend")))
}

pub fn read_lock(t: &Tensor) -> Result<RwLockReadGuard<'_, CpuData>> {
    cpu_buffer(t)?.0.read().map_err(|_| Error::Backend("cpu buffer lock poisoned".into()))
}

pub fn write_lock(t: &Tensor) -> Result<RwLockWriteGuard<'_, CpuData>> {
    cpu_buffer(t)?.0.write().map_err(|_| Error::Backend("cpu buffer lock poisoned".into()))
}
