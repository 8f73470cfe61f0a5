//! # ferrum-backend-wgpu
//!
//! Will implement `ferrum_engine::Backend` on wgpu (Vulkan, Metal, DX12, and
//! lavapipe in CI): device setup, buffers, a pipeline cache, one command
//! encoder per forward pass. Not built yet; [`open`] says so.

use std::sync::Arc;

use ferrum_engine::Backend;

/// The WebGPU backend, or why it cannot be used here.
pub fn open() -> Result<Arc<dyn Backend>, String> {
    Err("the WebGPU backend is not implemented in this build yet".into())
}
