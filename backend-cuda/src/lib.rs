//! # ferrum-backend-cuda
//!
//! Will implement `ferrum_engine::Backend` on NVIDIA GPUs through cudarc,
//! loading the driver, NVRTC and cuBLAS dynamically so the workspace builds
//! and runs where CUDA is absent. Not built yet; [`open`] says so.

use std::sync::Arc;

use ferrum_engine::Backend;

/// The CUDA backend, or why it cannot be used here.
pub fn open() -> Result<Arc<dyn Backend>, String> {
    Err("the CUDA backend is not implemented in this build yet".into())
}
