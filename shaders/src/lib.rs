//! # ferrum-shaders
//!
//! The WGSL sources of the WebGPU backend, one `.wgsl` file per op family
//! with the same stem as `engine/src/ops/<op>.rs`, exposed with
//! `include_str!` so the backend and the naga validation tests read the same
//! text. Empty until the WebGPU backend lands.

/// `(op file stem, WGSL source)` for every shader.
pub const SHADERS: &[(&str, &str)] = &[];
