//! # ferrum-backends
//!
//! Choosing a backend at run time: the only place that names the backend
//! crates, shared by the `ferrum` command and the desktop app.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use ferrum_engine::faults::{Fault, FaultyBackend};
use ferrum_engine::{Backend, CpuBackend};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The fastest present: CUDA, then a WebGPU hardware adapter, then the CPU.
    Auto,
    /// The fast CPU backend (SIMD kernels, a thread pool).
    Cpu,
    /// The plain CPU reference: the oracle the others are tested against.
    CpuRef,
    Wgpu,
    Cuda,
}

impl BackendChoice {
    /// Every choice, in the order menus list them.
    pub fn all() -> &'static [BackendChoice] {
        <Self as clap::ValueEnum>::value_variants()
    }

    /// The name `--backend` takes ("cpu-ref").
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::CpuRef => "cpu-ref",
            BackendChoice::Wgpu => "wgpu",
            BackendChoice::Cuda => "cuda",
        }
    }

    /// The choice `name` names, as `--backend` reads it.
    pub fn parse(name: &str) -> Option<BackendChoice> {
        <Self as clap::ValueEnum>::from_str(name, true).ok()
    }
}

/// Every backend this build knows, opened or with the reason it cannot be.
/// `threads`: the CPU backend's pool (None: the physical cores).
pub fn probe_all(threads: Option<usize>) -> Vec<(&'static str, Result<Arc<dyn Backend>, String>)> {
    vec![
        ("cuda", ferrum_backend_cuda::open()),
        ("wgpu", ferrum_backend_wgpu::open()),
        ("cpu", ferrum_backend_cpu::open(threads).map_err(|e| e.to_string())),
        ("cpu-ref", Ok(Arc::new(CpuBackend::new()) as Arc<dyn Backend>)),
    ]
}

/// Every WebGPU adapter with its type and limits, or why there are none.
pub fn wgpu_adapters() -> std::result::Result<Vec<String>, String> {
    ferrum_backend_wgpu::describe_adapters()
}

/// What `--backend auto` takes: CUDA, then a WebGPU adapter that is real
/// hardware, then the fast CPU backend (the reference if even that cannot
/// start). A software adapter (lavapipe, WARP) is never picked silently,
/// being slower than the CPU; `--backend wgpu` still runs on one.
pub fn auto(threads: Option<usize>) -> Arc<dyn Backend> {
    ferrum_backend_cuda::open()
        .or_else(|_| ferrum_backend_wgpu::open_hardware())
        .or_else(|_| ferrum_backend_cpu::open(threads).map_err(|e| e.to_string()))
        .unwrap_or_else(|_| Arc::new(CpuBackend::new()))
}

/// Opens only the backend chosen: probing the others costs memory (a Vulkan
/// instance maps Mesa's LLVM, ~45 MiB resident, even to find no GPU).
/// `FERRUM_FAULT=OP:TRIGGER:EFFECT` wraps it in a fault injector, for
/// testing how `serve` contains failures (see `ferrum_engine::faults`).
pub fn open(choice: BackendChoice, threads: Option<usize>) -> Result<Arc<dyn Backend>> {
    let backend = open_plain(choice, threads)?;
    let Ok(spec) = std::env::var("FERRUM_FAULT") else { return Ok(backend) };
    let fault = Fault::parse(&spec)?;
    eprintln!("FERRUM_FAULT: injecting {fault:?} into the {} backend", backend.name());
    Ok(Arc::new(FaultyBackend::new(backend, fault)))
}

fn open_plain(choice: BackendChoice, threads: Option<usize>) -> Result<Arc<dyn Backend>> {
    let (wanted, backend) = match choice {
        BackendChoice::Auto => return Ok(auto(threads)),
        BackendChoice::Cpu => ("cpu", ferrum_backend_cpu::open(threads).map_err(|e| e.to_string())),
        BackendChoice::CpuRef => ("cpu-ref", Ok(Arc::new(CpuBackend::new()) as Arc<dyn Backend>)),
        BackendChoice::Wgpu => ("wgpu", ferrum_backend_wgpu::open()),
        BackendChoice::Cuda => ("cuda", ferrum_backend_cuda::open()),
    };
    backend.map_err(|why| anyhow!("backend {wanted} is unavailable: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lavapipe in CI: present for `--backend wgpu`, never chosen by `auto`.
    #[test]
    fn auto_never_picks_a_software_adapter() {
        let picked = auto(None);
        match ferrum_backend_wgpu::shared() {
            Ok(w) if w.is_software() => {
                assert_ne!(picked.name(), "wgpu", "auto picked {}", picked.device_description())
            }
            Ok(_) => assert_ne!(picked.name(), "cpu", "a hardware adapter is present"),
            Err(_) => {}
        }
        let explicit = open(BackendChoice::Wgpu, None);
        assert_eq!(explicit.is_ok(), ferrum_backend_wgpu::shared().is_ok());
    }

    #[test]
    fn names_are_what_clap_accepts() {
        for &c in BackendChoice::all() {
            assert_eq!(BackendChoice::parse(c.name()), Some(c));
        }
        assert_eq!(BackendChoice::parse("tpu"), None);
    }
}
