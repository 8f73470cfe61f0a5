//! # ferrum-kernels
//!
//! The CUDA C sources of the CUDA backend, one `.cu` file per op family plus
//! a shared `common.cuh`, exposed with `include_str!` and compiled with NVRTC
//! at first use (never committed as PTX or cubin). Empty until the CUDA
//! backend lands.

/// `(op file stem, CUDA C source)` for every kernel.
pub const KERNELS: &[(&str, &str)] = &[];
