//! Op dispatch: each op turned into launches of the kernels in
//! `ferrum-kernels`, after the checks the reference makes (index ranges come
//! from the host copies of u32 tensors, read back first where a kernel wrote
//! the tensor, so a bad id is an `Err`, never a device fault). The match has
//! no catch-all arm: a new op is a compile error here until it is ported.
//!
//! Each `#[repr(C)]` params struct below mirrors the C struct of the same
//! name in `kernels/cu/<op>.cu`; kernels take it by value as their first
//! argument, then raw device pointers.

mod attention;
mod gather_rows;
mod index_topk;
mod matmul;
mod moe_matmul;
#[cfg(test)]
mod on_host;

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaFunction, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};
use ferrum_engine::ops::{Activation, MoeRoute, Op, OpKind, RopeStyle, RouterScoring};
use ferrum_engine::quant::QuantFormat;
use ferrum_engine::quant::device_layout::DeviceFormat;
use ferrum_engine::{DType, Error, Result, Tensor};

use crate::buffer::{cuda_buffer, driver_err};

/// Mirrors `RmsNormParams` in kernels/cu/rms_norm.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct RmsNormParams {
    pub rows: u32,
    pub cols: u32,
    pub eps: f32,
    pub unit_offset: u32,
    pub has_bias: u32,
}

/// Mirrors `RopeParams` in kernels/cu/rope.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct RopeParams {
    pub tokens: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub half: u32,
    pub interleaved: u32,
    pub attention_scale: f32,
}

/// Mirrors `KvStoreParams` in kernels/cu/kv_store.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct KvStoreParams {
    pub tokens: u32,
    pub row: u32,
    pub num_slots: u32,
    pub _pad: u32,
}

/// Mirrors `AttentionParams` in kernels/cu/attention.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttentionParams {
    pub tokens: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub block_size: u32,
    pub max_blocks: u32,
    pub window: u32,
    pub num_slots: u32,
    pub scale: f32,
    pub softcap: f32,
    pub has_sinks: u32,
    pub n_selected: u32,
}

/// Mirrors `IndexTopkParams` in kernels/cu/index_topk.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexTopkParams {
    pub tokens: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub block_size: u32,
    pub max_blocks: u32,
    pub top_k: u32,
    pub score_stride: u32,
    pub num_slots: u32,
}

/// Mirrors `ArgmaxParams` in kernels/cu/argmax.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArgmaxParams {
    pub rows: u32,
    pub cols: u32,
}

/// Mirrors `SampleParams` in kernels/cu/sample.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct SampleParams {
    pub rows: u32,
    pub cols: u32,
}

/// Mirrors `ElementwiseParams` in kernels/cu/{add,scale,softcap}.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ElementwiseParams {
    pub n: u64,
    pub value: f32,
    pub mode: u32,
}

/// Mirrors `GluParams` in kernels/cu/glu.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct GluParams {
    pub n: u64,
    pub mode: u32,
    pub alpha: f32,
    pub limit: f32,
    pub _pad: u32,
}

/// Mirrors `MoeRouteParams` in kernels/cu/moe_route.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct MoeRouteParams {
    pub tokens: u32,
    pub experts: u32,
    pub top_k: u32,
    pub sigmoid: u32,
    pub renormalize: u32,
    pub has_bias: u32,
    pub groups: u32,
    pub top_groups: u32,
    pub scale: f32,
}

/// `ROUTE_MAX_EXPERTS` in moe_route.cu: its shared arrays' size.
const ROUTE_MAX_EXPERTS: usize = 1024;

/// Mirrors `ConcatParams` in kernels/cu/concat.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConcatParams {
    pub rows: u64,
    pub m: u32,
    pub n: u32,
}

/// Mirrors `MoeCombineParams` in kernels/cu/moe_combine.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct MoeCombineParams {
    pub tokens: u32,
    pub top_k: u32,
    pub n: u32,
    pub _pad: u32,
}

// SAFETY: plain #[repr(C)] structs of u32/u64/f32, laid out as their C twins.
unsafe impl DeviceRepr for RmsNormParams {}
unsafe impl DeviceRepr for RopeParams {}
unsafe impl DeviceRepr for KvStoreParams {}
unsafe impl DeviceRepr for ConcatParams {}
unsafe impl DeviceRepr for AttentionParams {}
unsafe impl DeviceRepr for IndexTopkParams {}
unsafe impl DeviceRepr for ArgmaxParams {}
unsafe impl DeviceRepr for SampleParams {}
unsafe impl DeviceRepr for ElementwiseParams {}
unsafe impl DeviceRepr for GluParams {}
unsafe impl DeviceRepr for MoeRouteParams {}
unsafe impl DeviceRepr for MoeCombineParams {}

/// Threads per block of the 1-D kernels.
const BLOCK: u32 = 256;
/// Most blocks of a grid-stride kernel (each thread then loops).
const MAX_BLOCKS: u64 = 1 << 16;
/// Grid y and z are limited to 65535 blocks.
const MAX_GRID_Y: u32 = 65535;

/// The loaded kernels, the stream they run on, and cuBLAS when present.
pub(crate) struct Launcher<'a> {
    pub stream: &'a Arc<CudaStream>,
    pub functions: &'a HashMap<&'static str, CudaFunction>,
    pub blas: Option<&'a CudaBlas>,
}

impl Launcher<'_> {
    /// Queue `name` with `params` then `ptrs` as arguments; no wait.
    fn launch<P: DeviceRepr>(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        params: &P,
        ptrs: &[u64],
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(()); // nothing to do (CUDA rejects an empty grid)
        }
        if grid.1 > MAX_GRID_Y || grid.2 > MAX_GRID_Y || grid.0 > i32::MAX as u32 {
            return Err(Error::Backend(format!("cuda: grid {grid:?} of {name} is too large")));
        }
        let f = self.functions.get(name).ok_or_else(|| Error::Backend(format!("cuda: kernel {name} not loaded")))?;
        let cfg = LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: 0 };
        let mut b = self.stream.launch_builder(f);
        b.arg(params);
        for p in ptrs {
            b.arg(p);
        }
        // SAFETY: the arguments match the kernel's signature (params struct by
        // value, then device pointers to live buffers of the sizes the shape
        // rule gives), and every index the kernel follows was checked above.
        unsafe { b.launch(cfg) }.map(|_| ()).map_err(driver_err(name))
    }

    /// A grid-stride kernel over `n` elements.
    fn elementwise(&self, name: &str, n: usize, value: f32, mode: u32, ptrs: &[u64]) -> Result<()> {
        self.launch(name, elementwise_grid(n as u64), BLOCK, &ElementwiseParams { n: n as u64, value, mode }, ptrs)
    }
}

/// The grid of a grid-stride kernel over `n` elements.
fn elementwise_grid(n: u64) -> (u32, u32, u32) {
    (n.div_ceil(BLOCK as u64).min(MAX_BLOCKS) as u32, 1, 1)
}

/// glu's params for `n` elements of `activation`.
fn glu_params(activation: Activation, n: usize) -> GluParams {
    let (mode, alpha, limit) = match activation {
        Activation::Silu => (0, 0.0, 0.0),
        Activation::GeluTanh => (1, 0.0, 0.0),
        Activation::SwigluClamped { alpha, limit } => (2, alpha, limit),
    };
    GluParams { n: n as u64, mode, alpha, limit, _pad: 0 }
}

/// Launch the kernels that compute `op`; `inputs` and `out` are already
/// validated against the op's shape rule.
pub(crate) fn run(l: &Launcher, op: &Op, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
    // the weight ops: a quantized weight is two buffers
    if let Op::Matmul(_) = op {
        return matmul::run(l, inputs, out);
    }
    if let Op::MoeMatmul(p) = op {
        return moe_matmul::run(l, p, inputs, out);
    }
    if let Op::GatherRows(_) = op {
        return gather_rows::run(l, inputs, out);
    }
    let ptrs = inputs.iter().map(|t| cuda_buffer(t).map(|b| b.ptr())).collect::<Result<Vec<_>>>()?;
    let o = cuda_buffer(out)?.ptr();
    match op {
        Op::GatherRows(_) => gather_rows::run(l, inputs, out),
        Op::RmsNorm(p) => {
            let (rows, cols) = (inputs[0].shape()[0], inputs[0].shape()[1]);
            let params = RmsNormParams {
                rows: u32_of(rows, "rows")?,
                cols: u32_of(cols, "cols")?,
                eps: p.eps,
                unit_offset: p.unit_offset as u32,
                has_bias: (inputs.len() > 2) as u32,
            };
            // without a bias the kernel never reads its pointer: null
            let bias = ptrs.get(2).copied().unwrap_or(0);
            l.launch("rms_norm", (params.rows, 1, 1), BLOCK, &params, &[ptrs[0], ptrs[1], bias, o])
        }
        Op::Matmul(_) => matmul::run(l, inputs, out),
        Op::Rope(p) => {
            let x = inputs[0];
            let params = RopeParams {
                tokens: u32_of(x.shape()[0], "tokens")?,
                heads: u32_of(x.shape()[1], "heads")?,
                head_dim: u32_of(x.shape()[2], "head_dim")?,
                half: u32_of(inputs[2].shape()[0], "rotary_dim / 2")?,
                interleaved: (p.style == RopeStyle::Interleaved) as u32,
                attention_scale: p.attention_scale,
            };
            let blocks = (x.elem_count() as u64).div_ceil(BLOCK as u64).min(MAX_BLOCKS) as u32;
            l.launch("rope", (blocks, 1, 1), BLOCK, &params, &[ptrs[0], ptrs[1], ptrs[2], o])
        }
        Op::KvStore(p) => {
            let src = inputs[0];
            let slots = cuda_buffer(inputs[1])?.host_u32(l.stream)?;
            p.check_slots(&slots)?;
            let row = src.shape()[1] * src.shape()[2];
            let params = KvStoreParams {
                tokens: u32_of(slots.len(), "tokens")?,
                row: u32_of(row, "kv_heads * head_dim")?,
                num_slots: u32_of(p.num_slots, "num_slots")?,
                _pad: 0,
            };
            let name = by_cache_dtype(out.dtype(), KV_STORE_KERNELS)?;
            let blocks = (src.elem_count() as u64).div_ceil(BLOCK as u64).min(MAX_BLOCKS) as u32;
            l.launch(name, (blocks, 1, 1), BLOCK, &params, &[ptrs[0], ptrs[1], o])
        }
        Op::Attention(p) => attention::run(l, p, inputs, &ptrs, o),
        Op::Glu(p) => {
            let params = glu_params(p.activation, out.elem_count());
            l.launch("glu", elementwise_grid(params.n), BLOCK, &params, &[ptrs[0], ptrs[1], o])
        }
        Op::Add(_) => l.elementwise("add", out.elem_count(), 0.0, 0, &[ptrs[0], ptrs[1], o]),
        Op::Scale(p) => l.elementwise("scale", out.elem_count(), p.factor, 0, &[ptrs[0], o]),
        Op::Softcap(p) => l.elementwise("softcap", out.elem_count(), p.cap, 0, &[ptrs[0], o]),
        Op::Argmax(_) => {
            let (rows, cols) = (inputs[0].shape()[0], inputs[0].shape()[1]);
            let p = ArgmaxParams { rows: u32_of(rows, "rows")?, cols: u32_of(cols, "cols")? };
            // one block per row
            l.launch("argmax", (p.rows, 1, 1), BLOCK, &p, &[ptrs[0], o])
        }
        Op::Sample(_) => {
            let (rows, cols) = (inputs[0].shape()[0], inputs[0].shape()[1]);
            let p = SampleParams { rows: u32_of(rows, "rows")?, cols: u32_of(cols, "cols")? };
            // one block per row, of the 256 threads (BLOCK) the kernel's shared arrays are sized for
            l.launch("sample", (p.rows, 1, 1), BLOCK, &p, &[ptrs[0], ptrs[1], ptrs[2], o])
        }
        Op::MoeRoute(p) => {
            let params = moe_route_params(p, inputs[0].shape()[0], inputs[0].shape()[1], inputs.len() > 1)?;
            // one warp per token; without a bias the kernel never reads ptrs[1]
            let bias = ptrs.get(1).copied().unwrap_or(0);
            l.launch("moe_route", (params.tokens, 1, 1), 32, &params, &[ptrs[0], bias, o])
        }
        Op::MoeMatmul(p) => moe_matmul::run(l, p, inputs, out),
        Op::MoeCombine(_) => {
            let p = moe_combine_params(inputs[1].shape()[0], inputs[1].shape()[1] / 2, inputs[0].shape()[1])?;
            l.launch("moe_combine", moe_combine_grid(&p), BLOCK, &p, &[ptrs[0], ptrs[1], o])
        }
        Op::IndexTopk(p) => index_topk::run(l, p, inputs, out),
        Op::Concat(_) => {
            let last = |t: &Tensor| t.shape().last().copied().unwrap_or(1);
            let (m, n) = (last(inputs[0]), last(inputs[1]));
            let rows = out.elem_count() / (m + n).max(1);
            let p = ConcatParams { rows: rows as u64, m: u32_of(m, "m")?, n: u32_of(n, "n")? };
            let blocks = (out.elem_count() as u64).div_ceil(BLOCK as u64).min(MAX_BLOCKS) as u32;
            l.launch("concat", (blocks, 1, 1), BLOCK, &p, &[ptrs[0], ptrs[1], o])
        }
    }
}

/// moe_route's params for `tokens` rows of `experts` logits; more experts
/// than the kernel's shared arrays hold is an error.
fn moe_route_params(p: &MoeRoute, tokens: usize, experts: usize, has_bias: bool) -> Result<MoeRouteParams> {
    if experts > ROUTE_MAX_EXPERTS {
        return Err(Error::Backend(format!(
            "cuda: moe_route takes at most {ROUTE_MAX_EXPERTS} experts, not {experts}"
        )));
    }
    Ok(MoeRouteParams {
        tokens: u32_of(tokens, "tokens")?,
        experts: u32_of(experts, "experts")?,
        top_k: u32_of(p.top_k, "top_k")?,
        sigmoid: (p.scoring == RouterScoring::Sigmoid) as u32,
        renormalize: p.renormalize as u32,
        has_bias: has_bias as u32,
        groups: u32_of(p.groups.map_or(0, |g| g.groups), "groups")?,
        top_groups: u32_of(p.groups.map_or(0, |g| g.top_groups), "top_groups")?,
        scale: p.scale,
    })
}

fn moe_combine_params(tokens: usize, top_k: usize, n: usize) -> Result<MoeCombineParams> {
    u32_of(tokens * top_k, "tokens * top_k")?;
    Ok(MoeCombineParams {
        tokens: u32_of(tokens, "tokens")?,
        top_k: u32_of(top_k, "top_k")?,
        n: u32_of(n, "n")?,
        _pad: 0,
    })
}

/// A block per (token, BLOCK columns).
fn moe_combine_grid(p: &MoeCombineParams) -> (u32, u32, u32) {
    (p.tokens, p.n.div_ceil(BLOCK), 1)
}

/// What the op's contract allows: every weight op (matmul, gather_rows,
/// moe_matmul) reads every float and quantized format, GGUF block formats
/// kept packed included (those with a decoder: `DeviceFormat::of_ggml`);
/// kv_store and attention take a KV cache of every cache dtype (f32, f16,
/// bf16, fp8 E4M3), as index_topk's key cache does.
pub(crate) fn supports(op: OpKind, dtype: DType) -> bool {
    op.takes(dtype)
        && match dtype {
            DType::Quant(QuantFormat::Ggml(ty)) => DeviceFormat::of_ggml(ty).is_some(),
            DType::F8E4M3 => matches!(op, OpKind::KvStore | OpKind::Attention | OpKind::IndexTopk),
            DType::Quant(_) | DType::F32 | DType::F16 | DType::BF16 | DType::U32 => true,
        }
}

/// kv_store.cu's kernels, by cache dtype (f32, f16, bf16, fp8).
const KV_STORE_KERNELS: [&str; 4] = ["kv_store_f32", "kv_store_f16", "kv_store_bf16", "kv_store_fp8"];

/// The kernel variant for a KV cache of `dtype`, of `kernels` (its f32,
/// f16, bf16 and fp8 E4M3 variants, in that order).
fn by_cache_dtype(dtype: DType, kernels: [&'static str; 4]) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok(kernels[0]),
        DType::F16 => Ok(kernels[1]),
        DType::BF16 => Ok(kernels[2]),
        DType::F8E4M3 => Ok(kernels[3]),
        other => Err(Error::Backend(format!("cuda has no kernel for a KV cache of {other}"))),
    }
}

/// The kernel variant for a weight of `dtype`.
fn by_dtype(dtype: DType, f32: &'static str, f16: &'static str, bf16: &'static str) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok(f32),
        DType::F16 => Ok(f16),
        DType::BF16 => Ok(bf16),
        // u32 (and any format added later) has no kernel: `supports` says so
        #[allow(unreachable_patterns)]
        other => Err(Error::Backend(format!("cuda has no {other} weight kernel"))),
    }
}

/// `usize` to a kernel's u32, or an error naming what overflowed.
fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Backend(format!("{what} = {v} does not fit a u32")))
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;
    use std::str::FromStr;

    use super::*;

    /// Sizes of the C structs as nvcc/NVRTC lay them out (u32/f32 4 bytes,
    /// u64 8 bytes aligned to 8, struct padded to its alignment).
    #[test]
    fn params_structs_have_their_c_sizes() {
        assert_eq!(size_of::<RmsNormParams>(), 20);
        assert_eq!(size_of::<RopeParams>(), 24);
        assert_eq!(size_of::<KvStoreParams>(), 16);
        assert_eq!(size_of::<AttentionParams>(), 48);
        assert_eq!(size_of::<ElementwiseParams>(), 16);
        assert_eq!(size_of::<GluParams>(), 24);
        assert_eq!(size_of::<ArgmaxParams>(), 8);
        assert_eq!(size_of::<SampleParams>(), 8);
        assert_eq!(size_of::<MoeRouteParams>(), 36);
        assert_eq!(size_of::<MoeCombineParams>(), 16);
        assert_eq!(size_of::<ConcatParams>(), 16);
        assert_eq!(size_of::<IndexTopkParams>(), 32);
    }

    #[test]
    fn every_weight_format_has_a_kernel() {
        let quant =
            ["nvfp4", "nvfp4:ct", "mxfp4", "fp8", "int8", "int4:g32"].map(|f| QuantFormat::from_str(f).unwrap());
        let ggml = ferrum_engine::quant::ggml::PACKED_TYPES.map(QuantFormat::Ggml);
        let weights =
            [DType::F32, DType::F16, DType::BF16].into_iter().chain(quant.into_iter().chain(ggml).map(DType::Quant));
        for d in weights {
            for op in [OpKind::Matmul, OpKind::GatherRows, OpKind::MoeMatmul] {
                assert!(supports(op, d), "{} {d}", op.name());
            }
            for op in [OpKind::Add, OpKind::MoeRoute, OpKind::MoeCombine] {
                assert_eq!(supports(op, d), d == DType::F32, "{} {d}", op.name());
            }
        }
        // GGUF types without a packed decoder stay unsupported
        assert!(!supports(OpKind::Matmul, DType::Quant(QuantFormat::Ggml(ferrum_engine::quant::GgmlType::F16))));
        assert!(!supports(OpKind::Matmul, DType::U32));
    }

    #[test]
    fn kv_caches_of_every_cache_dtype_and_fp8_nowhere_else() {
        let cache_ops = [OpKind::KvStore, OpKind::Attention, OpKind::IndexTopk];
        for d in DType::CACHE {
            for op in cache_ops {
                assert!(supports(op, d), "{} {d}", op.name());
            }
        }
        for op in OpKind::ALL.into_iter().filter(|op| !cache_ops.contains(op)) {
            assert!(!supports(op, DType::F8E4M3), "{}", op.name());
        }
        assert!(!supports(OpKind::KvStore, DType::U32) && !supports(OpKind::Attention, DType::U32));
        // every cache dtype names a kernel the backend loads
        let entries: Vec<&str> = ferrum_kernels::ENTRY_POINTS.iter().flat_map(|(_, e)| e.iter().copied()).collect();
        for d in DType::CACHE {
            for kernels in [KV_STORE_KERNELS, attention::KERNELS, index_topk::KERNELS] {
                let name = by_cache_dtype(d, kernels).unwrap();
                assert!(entries.contains(&name), "{name} is not in ferrum_kernels::ENTRY_POINTS");
            }
        }
        assert!(by_cache_dtype(DType::U32, KV_STORE_KERNELS).is_err());
    }

    /// Every kernel name a dispatch can form is an entry point the backend loads.
    #[test]
    fn every_quantized_kernel_name_is_an_entry_point() {
        use ferrum_engine::quant::device_layout::DeviceFormat as F;
        let entries: Vec<&str> = ferrum_kernels::ENTRY_POINTS.iter().flat_map(|(_, e)| e.iter().copied()).collect();
        let formats = [
            F::Nvfp4ModelOpt,
            F::Nvfp4Ct,
            F::Mxfp4,
            F::Fp8,
            F::Int8,
            F::Int4,
            F::Q4_0,
            F::Q4_1,
            F::Q5_0,
            F::Q5_1,
            F::Q8_0,
            F::Q2K,
            F::Q3K,
            F::Q4K,
            F::Q5K,
            F::Q6K,
        ];
        for f in formats {
            for kernel in ["matmul_gemv", "matmul_tiled", "matmul_dequant", "gather_rows", "moe_matmul"] {
                let name = format!("{kernel}_{}", matmul::quant_suffix(f));
                assert!(entries.contains(&name.as_str()), "{name} is not in ferrum_kernels::ENTRY_POINTS");
            }
        }
    }
}
