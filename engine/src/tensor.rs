//! A tensor is a shape, a dtype and a buffer owned by some backend. The engine
//! never looks inside the buffer; only the backend that made it does.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::dtype::DType;

/// Backend-owned storage. Each backend downcasts to its own buffer type.
pub trait Buffer: Any + Send + Sync {
    fn as_any(&self) -> &dyn Any;
}

/// A dense, row-major, contiguous tensor. Cloning shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    dtype: DType,
    buffer: Arc<dyn Buffer>,
}

impl Tensor {
    /// Only backends create tensors, around buffers they allocated.
    pub fn from_buffer(shape: Vec<usize>, dtype: DType, buffer: Arc<dyn Buffer>) -> Self {
        Tensor { shape, dtype, buffer }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn size_bytes(&self) -> usize {
        self.elem_count() * self.dtype.size_bytes()
    }

    pub fn buffer(&self) -> &Arc<dyn Buffer> {
        &self.buffer
    }

    /// The same buffer seen with another shape of equal element count.
    pub fn reshape(&self, shape: &[usize]) -> crate::Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.elem_count() {
            return Err(crate::Error::op("reshape", format!("cannot view {:?} as {:?}", self.shape, shape)));
        }
        Ok(Tensor { shape: shape.to_vec(), dtype: self.dtype, buffer: self.buffer.clone() })
    }

    pub fn same_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buffer, &other.buffer)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype)
    }
}
