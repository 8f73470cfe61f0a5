//! The op table. Each op is a variant carrying a named parameter struct; its
//! file holds the parameters, the shape rule, the math (doc comment) and the
//! CPU reference. Adding an op: see `docs/adding-an-op.md`.

mod add;
mod argmax;
pub mod attention;
mod concat;
mod gather_rows;
mod glu;
mod index_topk;
mod kv_store;
mod matmul;
mod moe_combine;
mod moe_matmul;
mod moe_route;
mod rms_norm;
mod rope;
mod sample;
mod scale;
mod softcap;

pub use add::Add;
pub use argmax::{Argmax, argmax_row};
pub use attention::Attention;
pub use concat::Concat;
pub use gather_rows::GatherRows;
pub use glu::{Activation, Glu};
pub use index_topk::{IndexTopk, NO_POSITION};
pub use kv_store::KvStore;
pub use matmul::Matmul;
pub use moe_combine::MoeCombine;
pub use moe_matmul::{MoeDims, MoeMatmul};
pub use moe_route::{ExpertGroups, MoeRoute, RouterScoring};
pub use rms_norm::RmsNorm;
pub use rope::{Rope, RopeStyle};
pub use sample::{Sample, sample_row};
pub use scale::Scale;
pub use softcap::Softcap;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use half::{bf16, f16};

/// One operation with its parameters. Backends match on this without a
/// catch-all arm, so a new variant is a compile error until every backend
/// says what it does with it.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    GatherRows(GatherRows),
    RmsNorm(RmsNorm),
    Matmul(Matmul),
    Rope(Rope),
    KvStore(KvStore),
    Attention(Attention),
    Glu(Glu),
    Add(Add),
    Scale(Scale),
    Softcap(Softcap),
    Argmax(Argmax),
    Sample(Sample),
    MoeRoute(MoeRoute),
    MoeMatmul(MoeMatmul),
    MoeCombine(MoeCombine),
    Concat(Concat),
    IndexTopk(IndexTopk),
}

/// The op without its parameters: what `Backend::supports` is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    GatherRows,
    RmsNorm,
    Matmul,
    Rope,
    KvStore,
    Attention,
    Glu,
    Add,
    Scale,
    Softcap,
    Argmax,
    Sample,
    MoeRoute,
    MoeMatmul,
    MoeCombine,
    Concat,
    IndexTopk,
}

impl OpKind {
    pub const ALL: [OpKind; 17] = [
        OpKind::GatherRows,
        OpKind::RmsNorm,
        OpKind::Matmul,
        OpKind::Rope,
        OpKind::KvStore,
        OpKind::Attention,
        OpKind::Glu,
        OpKind::Add,
        OpKind::Scale,
        OpKind::Softcap,
        OpKind::Argmax,
        OpKind::Sample,
        OpKind::MoeRoute,
        OpKind::MoeMatmul,
        OpKind::MoeCombine,
        OpKind::Concat,
        OpKind::IndexTopk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::GatherRows => "gather_rows",
            OpKind::RmsNorm => "rms_norm",
            OpKind::Matmul => "matmul",
            OpKind::Rope => "rope",
            OpKind::KvStore => "kv_store",
            OpKind::Attention => "attention",
            OpKind::Glu => "glu",
            OpKind::Add => "add",
            OpKind::Scale => "scale",
            OpKind::Softcap => "softcap",
            OpKind::Argmax => "argmax",
            OpKind::Sample => "sample",
            OpKind::MoeRoute => "moe_route",
            OpKind::MoeMatmul => "moe_matmul",
            OpKind::MoeCombine => "moe_combine",
            OpKind::Concat => "concat",
            OpKind::IndexTopk => "index_topk",
        }
    }
}

/// What an op asks of every backend, said once in the op's file (its
/// `CONTRACT`): which dtypes its operand takes and whether it updates its
/// output in place. A backend then says only what it implements
/// (`Backend::supports`); its index checks are the op's too (`check_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contract {
    /// The dtypes of the operand `Backend::supports` is asked about.
    pub operand: Operand,
    /// The output's old contents survive where the op does not write (the
    /// KV cache); every other op overwrites its whole output.
    pub in_place: bool,
}

/// Which dtypes an op's operand may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// f32 activations only.
    F32,
    /// A weight (matmul's w, gather_rows' table), the op's input `input`:
    /// any float dtype or any quantized format.
    Weight { input: usize },
    /// A KV cache ([`DType::CACHE`]): the op's input `input`, or with
    /// `None` its output.
    Cache { input: Option<usize> },
}

impl Contract {
    pub const F32: Contract = Contract { operand: Operand::F32, in_place: false };
    /// A weight op whose weight is input `input`.
    pub const fn weight(input: usize) -> Contract {
        Contract { operand: Operand::Weight { input }, in_place: false }
    }
    pub const IN_PLACE: Contract = Contract { operand: Operand::F32, in_place: true };

    pub fn takes(self, dtype: DType) -> bool {
        match self.operand {
            Operand::F32 => dtype == DType::F32,
            Operand::Weight { .. } => dtype.is_float() || dtype.is_quantized(),
            Operand::Cache { .. } => dtype.is_cache(),
        }
    }

    /// The dtype `Backend::supports` is asked about for these inputs and output.
    pub fn operand_dtype(self, inputs: &[&Tensor], out: &Tensor) -> DType {
        match self.operand {
            Operand::F32 => DType::F32,
            Operand::Weight { input } => inputs.get(input).map_or(DType::F32, |t| t.dtype()),
            Operand::Cache { input: Some(input) } => inputs.get(input).map_or(DType::F32, |t| t.dtype()),
            Operand::Cache { input: None } => out.dtype(),
        }
    }
}

impl OpKind {
    pub fn contract(self) -> Contract {
        match self {
            OpKind::GatherRows => GatherRows::CONTRACT,
            OpKind::RmsNorm => RmsNorm::CONTRACT,
            OpKind::Matmul => Matmul::CONTRACT,
            OpKind::Rope => Rope::CONTRACT,
            OpKind::KvStore => KvStore::CONTRACT,
            OpKind::Attention => Attention::CONTRACT,
            OpKind::Glu => Glu::CONTRACT,
            OpKind::Add => Add::CONTRACT,
            OpKind::Scale => Scale::CONTRACT,
            OpKind::Softcap => Softcap::CONTRACT,
            OpKind::Argmax => Argmax::CONTRACT,
            OpKind::Sample => Sample::CONTRACT,
            OpKind::MoeRoute => MoeRoute::CONTRACT,
            OpKind::MoeMatmul => MoeMatmul::CONTRACT,
            OpKind::MoeCombine => MoeCombine::CONTRACT,
            OpKind::Concat => Concat::CONTRACT,
            OpKind::IndexTopk => IndexTopk::CONTRACT,
        }
    }

    /// Whether the op's operand may have `dtype` (see [`Contract`]).
    pub fn takes(self, dtype: DType) -> bool {
        self.contract().takes(dtype)
    }
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::GatherRows(_) => OpKind::GatherRows,
            Op::RmsNorm(_) => OpKind::RmsNorm,
            Op::Matmul(_) => OpKind::Matmul,
            Op::Rope(_) => OpKind::Rope,
            Op::KvStore(_) => OpKind::KvStore,
            Op::Attention(_) => OpKind::Attention,
            Op::Glu(_) => OpKind::Glu,
            Op::Add(_) => OpKind::Add,
            Op::Scale(_) => OpKind::Scale,
            Op::Softcap(_) => OpKind::Softcap,
            Op::Argmax(_) => OpKind::Argmax,
            Op::Sample(_) => OpKind::Sample,
            Op::MoeRoute(_) => OpKind::MoeRoute,
            Op::MoeMatmul(_) => OpKind::MoeMatmul,
            Op::MoeCombine(_) => OpKind::MoeCombine,
            Op::Concat(_) => OpKind::Concat,
            Op::IndexTopk(_) => OpKind::IndexTopk,
        }
    }

    /// The shape rule: what the op produces from inputs of these specs, or
    /// why the inputs are wrong.
    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        match self {
            Op::GatherRows(p) => p.output_spec(inputs),
            Op::RmsNorm(p) => p.output_spec(inputs),
            Op::Matmul(p) => p.output_spec(inputs),
            Op::Rope(p) => p.output_spec(inputs),
            Op::KvStore(p) => p.output_spec(inputs),
            Op::Attention(p) => p.output_spec(inputs),
            Op::Glu(p) => p.output_spec(inputs),
            Op::Add(p) => p.output_spec(inputs),
            Op::Scale(p) => p.output_spec(inputs),
            Op::Softcap(p) => p.output_spec(inputs),
            Op::Argmax(p) => p.output_spec(inputs),
            Op::Sample(p) => p.output_spec(inputs),
            Op::MoeRoute(p) => p.output_spec(inputs),
            Op::MoeMatmul(p) => p.output_spec(inputs),
            Op::MoeCombine(p) => p.output_spec(inputs),
            Op::Concat(p) => p.output_spec(inputs),
            Op::IndexTopk(p) => p.output_spec(inputs),
        }
    }
}

/// Shape and dtype without storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl TensorSpec {
    pub fn new(shape: &[usize], dtype: DType) -> Self {
        TensorSpec { shape: shape.to_vec(), dtype }
    }

    pub fn of(t: &Tensor) -> Self {
        TensorSpec::new(t.shape(), t.dtype())
    }

    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A matmul weight's rows: float data in its stored dtype, or a packed
/// quantized matrix dequantized a row at a time (never whole).
#[derive(Clone, Copy, Debug)]
pub enum WeightRows<'a> {
    Float(FloatSlice<'a>),
    Quant(&'a crate::quant::QuantizedMatrix),
}

impl WeightRows<'_> {
    /// Row `j` widened or dequantized into `out` (k values).
    pub fn row_into(&self, j: usize, out: &mut [f32]) -> Result<()> {
        match self {
            WeightRows::Float(f) => {
                f.widen_into(j * out.len(), out);
                Ok(())
            }
            WeightRows::Quant(m) => m.dequantize_row_into(j, out),
        }
    }

    /// Row `j` (k values) as f32: borrowed when stored as f32, else
    /// widened or dequantized into `scratch`.
    pub fn row<'s>(&'s self, j: usize, k: usize, scratch: &'s mut Vec<f32>) -> Result<&'s [f32]> {
        match self {
            WeightRows::Float(f) => Ok(f.f32_range(j * k, k, scratch)),
            WeightRows::Quant(m) => {
                scratch.resize(k, 0.0);
                m.dequantize_row_into(j, scratch)?;
                Ok(scratch)
            }
        }
    }
}

/// A read-only view of float data in its stored dtype. Reference ops widen
/// to f32 element by element (or a row at a time) and accumulate in f32.
#[derive(Clone, Copy, Debug)]
pub enum FloatSlice<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    /// float8_e4m3fn codes
    F8E4M3(&'a [u8]),
}

impl FloatSlice<'_> {
    pub fn len(&self) -> usize {
        match self {
            FloatSlice::F32(s) => s.len(),
            FloatSlice::F16(s) => s.len(),
            FloatSlice::BF16(s) => s.len(),
            FloatSlice::F8E4M3(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements `start..start + len` as f32: borrowed when already f32,
    /// else widened into `scratch`.
    pub fn f32_range<'s>(&'s self, start: usize, len: usize, scratch: &'s mut Vec<f32>) -> &'s [f32] {
        match self {
            FloatSlice::F32(s) => &s[start..start + len],
            _ => {
                scratch.resize(len, 0.0);
                self.widen_into(start, scratch);
                scratch
            }
        }
    }

    /// Widen `out.len()` elements starting at `start` into `out`: f16
    /// with the CPU's conversion instructions where it has them (F16C),
    /// bf16 by shifting, fp8 through a 256-entry table.
    pub fn widen_into(&self, start: usize, out: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        let end = start + out.len();
        match self {
            FloatSlice::F32(s) => out.copy_from_slice(&s[start..end]),
            FloatSlice::F16(s) => s[start..end].convert_to_f32_slice(out),
            FloatSlice::BF16(s) => s[start..end].convert_to_f32_slice(out),
            FloatSlice::F8E4M3(s) => {
                let table = crate::quant::fp8::decode_table();
                for (o, &v) in out.iter_mut().zip(&s[start..end]) {
                    *o = table[v as usize];
                }
            }
        }
    }
}

/// A KV cache's elements, written in its dtype.
#[derive(Debug)]
pub enum CacheSliceMut<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [f16]),
    BF16(&'a mut [bf16]),
    F8E4M3(&'a mut [u8]),
}

impl CacheSliceMut<'_> {
    /// Rounds `src` into elements `start..start + src.len()` (f16 and bf16
    /// round to nearest even; fp8 too, saturating at ±448).
    pub fn store(&mut self, start: usize, src: &[f32]) {
        let end = start + src.len();
        match self {
            CacheSliceMut::F32(c) => c[start..end].copy_from_slice(src),
            CacheSliceMut::F16(c) => c[start..end].iter_mut().zip(src).for_each(|(o, &x)| *o = f16::from_f32(x)),
            CacheSliceMut::BF16(c) => c[start..end].iter_mut().zip(src).for_each(|(o, &x)| *o = bf16::from_f32(x)),
            CacheSliceMut::F8E4M3(c) => {
                c[start..end].iter_mut().zip(src).for_each(|(o, &x)| *o = crate::quant::fp8::encode_saturating(x))
            }
        }
    }
}

/// `sum_i a[i] * b[i]`, accumulated in f32 in 32 interleaved partial sums:
/// the order SIMD units add in, so the compiler vectorises the loop with
/// several independent accumulators (a single running sum cannot be
/// reordered and is ~10x slower).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 32;
    let mut lanes = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

// Small helpers for the shape rules.

pub(crate) fn expect_inputs(op: &'static str, inputs: &[TensorSpec], n: usize) -> Result<()> {
    if inputs.len() != n {
        return Err(Error::op(op, format!("expects {n} inputs, got {}", inputs.len())));
    }
    Ok(())
}

pub(crate) fn expect_rank(op: &'static str, what: &str, t: &TensorSpec, rank: usize) -> Result<()> {
    if t.shape.len() != rank {
        return Err(Error::op(op, format!("{what} must have rank {rank}, got shape {:?}", t.shape)));
    }
    Ok(())
}

pub(crate) fn expect_dtype(op: &'static str, what: &str, t: &TensorSpec, ok: &[DType]) -> Result<()> {
    if !ok.contains(&t.dtype) {
        let names: Vec<_> = ok.iter().map(|d| d.name()).collect();
        return Err(Error::op(op, format!("{what} has dtype {}, expected one of {}", t.dtype, names.join("|"))));
    }
    Ok(())
}
