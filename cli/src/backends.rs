//! Choosing a backend at run time. The only place that names backend crates.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use ferrum_engine::{Backend, CpuBackend};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The fastest present: CUDA, then a WebGPU hardware adapter, then the CPU.
    Auto,
    Cpu,
    Wgpu,
    Cuda,
}

/// Every backend this build knows, opened or with the reason it cannot be.
pub fn probe_all() -> Vec<(&'static str, Result<Arc<dyn Backend>, String>)> {
    vec![
        ("cuda", ferrum_backend_cuda::open()),
        ("wgpu", ferrum_backend_wgpu::open()),
        ("cpu", Ok(Arc::new(CpuBackend::new()) as Arc<dyn Backend>)),
    ]
}

pub fn open(choice: BackendChoice) -> Result<Arc<dyn Backend>> {
    let wanted = match choice {
        BackendChoice::Auto => {
            let (_, first) = probe_all().into_iter().find(|(_, b)| b.is_ok()).expect("cpu is always present");
            return first.map_err(|e| anyhow!(e));
        }
        BackendChoice::Cpu => "cpu",
        BackendChoice::Wgpu => "wgpu",
        BackendChoice::Cuda => "cuda",
    };
    let (_, backend) = probe_all().into_iter().find(|(n, _)| *n == wanted).expect("every choice is probed");
    backend.map_err(|why| anyhow!("backend {wanted} is unavailable: {why}"))
}
