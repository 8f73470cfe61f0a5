//! Op dispatch: each op's file turns (params, inputs, output) into the
//! compute dispatches that run it, after checking what the reference checks
//! (index ranges come from the host copies of u32 tensors). The match below
//! has no catch-all arm: a new op is a compile error here until it is ported.

mod argmax;
mod attention;
mod concat;
mod elementwise;
mod gather_rows;
mod index_topk;
mod kv_store;
mod matmul;
mod moe_combine;
mod moe_matmul;
mod moe_route;
mod rms_norm;
mod rope;
mod sample;

use std::cell::RefCell;
use std::sync::Arc;

use ferrum_engine::ops::{Op, OpKind};
use ferrum_engine::quant::QuantFormat;
use ferrum_engine::quant::device_layout::DeviceFormat;
use ferrum_engine::{DType, Result, Tensor};

use crate::buffer::{BufferPool, GpuBuffer};
use crate::encoder::Dispatch;
use crate::pipelines::{Access, PipelineKey};
use crate::window::{BindLimits, Binding};

/// What planning needs of the device.
pub(crate) struct Ctx<'a> {
    pub limits: BindLimits,
    /// Use the `enable f16;` shader variants for f16 weights.
    pub native_f16: bool,
    /// For scratch buffers (attention over a windowed cache).
    pub device: &'a wgpu::Device,
    pub pool: &'a Arc<BufferPool>,
    /// Scratch buffers of the planned dispatches. They go back to the pool
    /// when the context is dropped, after the dispatches are recorded, so no
    /// other op can be recorded into them first.
    pub scratch: RefCell<Vec<GpuBuffer>>,
}

impl Ctx<'_> {
    /// A scratch buffer of `bytes`, as a binding, kept until recording is done.
    pub fn scratch(&self, bytes: u64) -> Binding {
        let buf = GpuBuffer::alloc(self.device, self.pool, bytes, None);
        let binding = Binding { buffer: buf.raw().clone(), offset: 0, size: bytes.next_multiple_of(4).max(4) };
        self.scratch.borrow_mut().push(buf);
        binding
    }
}

/// The dispatches that compute `op`; `inputs` and `out` are already
/// validated against the op's shape rule.
pub(crate) fn plan(op: &Op, inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    match op {
        Op::GatherRows(_) => gather_rows::plan(inputs, out, ctx),
        Op::RmsNorm(p) => rms_norm::plan(p, inputs, out, ctx),
        Op::Matmul(_) => matmul::plan(inputs, out, ctx),
        Op::Rope(p) => rope::plan(p, inputs, out, ctx),
        Op::KvStore(p) => kv_store::plan(p, inputs, out, ctx),
        Op::Attention(p) => attention::plan(p, inputs, out, ctx),
        Op::Glu(p) => elementwise::glu(p, inputs, out, ctx),
        Op::Add(_) => elementwise::add(inputs, out, ctx),
        Op::Scale(p) => elementwise::scale(p, inputs, out, ctx),
        Op::Softcap(p) => elementwise::softcap(p, inputs, out, ctx),
        Op::Argmax(_) => argmax::plan(inputs, out, ctx),
        Op::Sample(_) => sample::plan(inputs, out, ctx),
        Op::MoeRoute(p) => moe_route::plan(p, inputs, out, ctx),
        Op::MoeMatmul(p) => moe_matmul::plan(p, inputs, out, ctx),
        Op::MoeCombine(_) => moe_combine::plan(inputs, out, ctx),
        Op::Concat(_) => concat::plan(inputs, out, ctx),
        Op::IndexTopk(p) => index_topk::plan(p, inputs, out, ctx),
    }
}

/// What the op's contract allows, less what the adapter cannot run: f16
/// weights need its f16 (`native_f16`, or `f16_in_f32` to unpack them from
/// u32 words; bf16 widens with a shift), and GGUF block formats need
/// `f16_in_f32` too (shaders/quant/read_ggml.wgsl unpacks their f16 scales).
/// Every quantized format is decoded in registers by shaders/quant/.
/// moe_matmul has no native-f16 variant: its f16 stacks need `f16_in_f32`.
/// KV caches of every cache dtype are u32 words converted with integer
/// arithmetic (shaders/kv_store.wgsl, attention.wgsl), on any adapter.
pub(crate) fn supports(op: OpKind, dtype: DType, native_f16: bool, f16_in_f32: bool) -> bool {
    let native_f16 = native_f16 && op != OpKind::MoeMatmul;
    let cache_op = matches!(op, OpKind::KvStore | OpKind::Attention | OpKind::IndexTopk);
    op.takes(dtype)
        && match dtype {
            DType::F16 | DType::F8E4M3 if cache_op => true,
            DType::F16 => native_f16 || f16_in_f32,
            DType::Quant(QuantFormat::Ggml(ty)) => f16_in_f32 && DeviceFormat::of_ggml(ty).is_some(),
            DType::Quant(_) | DType::F32 | DType::BF16 | DType::U32 => true,
            DType::F8E4M3 => false,
        }
}

/// The pipeline for a shader that reads a weight of `dtype`: its `W_DTYPE`
/// override, or the native-f16 variant.
fn weight_pipeline(
    shader: &'static str,
    entry: &'static str,
    storage: &'static [Access],
    dtype: DType,
    ctx: &Ctx,
) -> PipelineKey {
    let key = PipelineKey::new(shader, entry, storage);
    match dtype {
        DType::F16 if ctx.native_f16 => PipelineKey { native_f16: true, ..key },
        DType::F16 => key.constant("W_DTYPE", 1),
        DType::BF16 => key.constant("W_DTYPE", 2),
        DType::F32 | DType::F8E4M3 | DType::U32 | DType::Quant(_) => key.constant("W_DTYPE", 0),
    }
}

/// A KV cache's `CACHE_DTYPE` override (shaders/kv_store.wgsl,
/// attention.wgsl) and its elements per u32 word.
fn cache_dtype(op: &'static str, dtype: DType) -> Result<(u32, usize)> {
    match dtype {
        DType::F32 => Ok((0, 1)),
        DType::F16 => Ok((1, 2)),
        DType::BF16 => Ok((2, 2)),
        DType::F8E4M3 => Ok((3, 4)),
        DType::U32 | DType::Quant(_) => Err(ferrum_engine::Error::op(op, format!("a cache cannot hold {dtype}"))),
    }
}

fn bytes<T: bytemuck::Pod>(params: &T) -> Vec<u8> {
    bytemuck::bytes_of(params).to_vec()
}

/// `usize` to a shader's u32, or an error naming what overflowed.
fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| ferrum_engine::Error::Backend(format!("{what} = {v} does not fit a u32")))
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::{
        argmax, attention, concat, elementwise, gather_rows, index_topk, kv_store, matmul, moe_combine, moe_route,
        rms_norm, rope, sample,
    };

    /// Each `#[repr(C)]` params struct has the size of the WGSL `Params` it
    /// mirrors (naga's layout), in the portable and the f16 variants.
    #[test]
    fn params_structs_match_their_wgsl() {
        let ours = [
            ("add", size_of::<elementwise::AddParams>()),
            ("argmax", size_of::<argmax::ArgmaxParams>()),
            ("attention", size_of::<attention::AttentionParams>()),
            ("gather_rows", size_of::<gather_rows::GatherRowsParams>()),
            ("glu", size_of::<elementwise::GluParams>()),
            ("kv_store", size_of::<kv_store::KvStoreParams>()),
            ("index_topk", size_of::<index_topk::IndexTopkParams>()),
            ("matmul", size_of::<matmul::MatmulParams>()),
            ("concat", size_of::<concat::ConcatParams>()),
            ("moe_combine", size_of::<moe_combine::MoeCombineParams>()),
            // the quantized matmul body behind the float reader
            ("moe_matmul", size_of::<matmul::QuantMatmulParams>()),
            ("moe_route", size_of::<moe_route::MoeRouteParams>()),
            ("rms_norm", size_of::<rms_norm::RmsNormParams>()),
            ("rope", size_of::<rope::RopeParams>()),
            ("sample", size_of::<sample::SampleParams>()),
            ("scale", size_of::<elementwise::ScaleParams>()),
            ("softcap", size_of::<elementwise::SoftcapParams>()),
        ];
        let shaders = ferrum_shaders::SHADERS.iter().map(|s| (s, false));
        let all = shaders.chain(ferrum_shaders::F16_SHADERS.iter().map(|s| (s, true)));
        let mut checked = 0;
        for ((stem, src), f16) in all {
            let module = naga::front::wgsl::parse_str(src).unwrap();
            let params = module.types.iter().find(|(_, t)| t.name.as_deref() == Some("Params"));
            let Some((_, ty)) = params else { panic!("{stem}: no struct Params") };
            let naga::TypeInner::Struct { span, .. } = ty.inner else { panic!("{stem}: Params is not a struct") };
            let (_, size) = ours.iter().find(|(s, _)| s == stem).unwrap_or_else(|| panic!("{stem}: no Rust params"));
            assert_eq!(*size, span as usize, "{stem} (f16 variant: {f16})");
            assert!(*size as u64 <= crate::pipelines::PARAMS_SLOT);
            checked += 1;
        }
        assert_eq!(checked, ours.len() + ferrum_shaders::F16_SHADERS.len());
        let quant = [
            ("gather_rows", size_of::<gather_rows::QuantGatherRowsParams>()),
            ("matmul", size_of::<matmul::QuantMatmulParams>()),
        ];
        for (stem, src) in ferrum_shaders::QUANT_SHADERS.iter().chain(ferrum_shaders::GGML_SHADERS) {
            let module = naga::front::wgsl::parse_str(src).unwrap();
            let (_, ty) = module.types.iter().find(|(_, t)| t.name.as_deref() == Some("Params")).unwrap();
            let naga::TypeInner::Struct { span, .. } = ty.inner else { panic!("quant/{stem}: Params is not a struct") };
            let (_, size) =
                quant.iter().find(|(s, _)| s == stem).unwrap_or_else(|| panic!("quant/{stem}: no Rust params"));
            assert_eq!(*size, span as usize, "quant/{stem}");
        }
    }
}
