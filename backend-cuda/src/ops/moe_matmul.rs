//! moe_matmul: kernels/cu/moe_matmul.cu, one launch for every (token,
//! choice) row. The expert ids are in the route, which a kernel (moe_route)
//! wrote and a recorded graph rewrites on every replay, so the host never
//! looks at them: each block finds the rows of its expert on the device, and
//! an id naming no expert gives a zero row instead of the reference's `Err`.

use cudarc::driver::DeviceRepr;
use ferrum_engine::ops::{MoeDims, MoeMatmul};
use ferrum_engine::quant::device_layout::DeviceLayout;
use ferrum_engine::{DType, Result, Tensor};

use super::matmul::{QuantMatmulParams, quant_suffix};
use super::{Launcher, by_dtype, u32_of};
use crate::buffer::cuda_buffer;
use crate::quant::cuda_quant_buffer;

/// `MOE_WARPS` in moe_matmul.cu: output columns per block, a warp each.
const MOE_WARPS: u32 = 8;
/// Threads per block.
pub(crate) const BLOCK_THREADS: u32 = 32 * MOE_WARPS;

/// Mirrors `MoeMatmulParams` in kernels/cu/moe_matmul.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MoeMatmulParams {
    pub tokens: u32,
    pub top_k: u32,
    pub experts: u32,
    pub per_choice: u32,
    pub n: u32,
    pub k: u32,
    pub has_bias: u32,
    pub vec: u32,
    pub has_scale: u32,
}

/// Mirrors `MoeQuantParams` in kernels/cu/moe_matmul.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MoeQuantParams {
    pub moe: MoeMatmulParams,
    pub w: QuantMatmulParams,
}

// SAFETY: plain #[repr(C)] structs of u32/f32, laid out as their C twins.
unsafe impl DeviceRepr for MoeMatmulParams {}
unsafe impl DeviceRepr for MoeQuantParams {}

impl MoeMatmulParams {
    /// The params of `d` over `experts` stacked weights; `vec` is the
    /// reader's chunk path (see `MatmulParams::vec`, `QuantMatmulParams::vec`).
    pub fn new(d: MoeDims, experts: usize, [has_bias, has_scale]: [bool; 2], vec: bool) -> Result<Self> {
        // the kernel's u32 indices: choice rows, and rows of the stack
        u32_of(d.tokens * d.top_k, "tokens * top_k")?;
        u32_of(experts * d.n, "rows of the expert stack")?;
        Ok(MoeMatmulParams {
            tokens: u32_of(d.tokens, "tokens")?,
            top_k: u32_of(d.top_k, "top_k")?,
            experts: u32_of(experts, "experts")?,
            per_choice: d.per_choice as u32,
            n: u32_of(d.n, "n")?,
            k: u32_of(d.k, "k")?,
            has_bias: has_bias as u32,
            vec: vec as u32,
            has_scale: has_scale as u32,
        })
    }

    /// Column tiles by experts, and one more block row for ids that name no
    /// expert (the launcher refuses more than 65535).
    pub fn grid(&self) -> (u32, u32, u32) {
        (self.n.div_ceil(MOE_WARPS), self.experts + 1, 1)
    }
}

/// A quantized stack's params: its reader's (`n` the stack's rows) and the
/// product's; `has` says whether a bias and a scale are given.
pub(crate) fn quant_params(lay: &DeviceLayout, d: MoeDims, experts: usize, has: [bool; 2]) -> Result<MoeQuantParams> {
    let w = QuantMatmulParams::new(lay, d.tokens * d.top_k, experts * d.n, d.k, has[0])?;
    Ok(MoeQuantParams { moe: MoeMatmulParams::new(d, experts, has, w.vec == 1)?, w })
}

/// A float stack's params: 16-byte chunks of whole, aligned weight rows as
/// matmul's GEMV takes them.
pub(crate) fn float_params(dtype: DType, d: MoeDims, experts: usize, has: [bool; 2]) -> Result<MoeMatmulParams> {
    let vec = (d.k * dtype.size_bytes()).is_multiple_of(16) && d.k.is_multiple_of(4);
    MoeMatmulParams::new(d, experts, has, vec)
}

pub(super) fn run(l: &Launcher, op: &MoeMatmul, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
    let (x, w, route) = (inputs[0], inputs[1], inputs[2]);
    let (bias, scale) = op.optional(inputs);
    let d = op.dims_of(x.shape(), w.shape(), route.shape());
    let (xp, rp) = (cuda_buffer(x)?.ptr(), cuda_buffer(route)?.ptr());
    // without a bias or a scale the kernel never reads its pointer
    let ptr = |t: Option<&&Tensor>| t.map(|t| cuda_buffer(t).map(|b| b.ptr())).transpose().map(|p| p.unwrap_or(0));
    let (bp, sp) = (ptr(bias)?, ptr(scale)?);
    let has = [bias.is_some(), scale.is_some()];
    let o = cuda_buffer(out)?.ptr();
    if let DType::Quant(_) = w.dtype() {
        let q = cuda_quant_buffer(w)?;
        let p = quant_params(&q.layout, d, op.experts, has)?;
        let name = format!("moe_matmul_{}", quant_suffix(q.layout.fmt));
        return l.launch(&name, p.moe.grid(), BLOCK_THREADS, &p, &[xp, q.codes.ptr(), q.scales.ptr(), rp, bp, sp, o]);
    }
    let p = float_params(w.dtype(), d, op.experts, has)?;
    let name = by_dtype(w.dtype(), "moe_matmul_f32", "moe_matmul_f16", "moe_matmul_bf16")?;
    l.launch(name, p.grid(), BLOCK_THREADS, &p, &[xp, cuda_buffer(w)?.ptr(), rp, bp, sp, o])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_structs_have_their_c_sizes() {
        assert_eq!(std::mem::size_of::<MoeMatmulParams>(), 36);
        assert_eq!(std::mem::size_of::<MoeQuantParams>(), 84);
    }
}
