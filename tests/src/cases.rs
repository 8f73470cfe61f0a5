//! The table of op cases: each op with its parameters and concrete host
//! inputs, drawn from a seeded RNG so every run and every backend sees the
//! same numbers.
//!
//! Tensors in this engine are always dense, row-major and contiguous (see
//! `engine/src/tensor.rs`), so there are no strided or non-contiguous view
//! cases; "layout" variety lives in the paged KV cache instead (shuffled,
//! non-contiguous block tables, odd block sizes).

mod paged;
mod sparse;

pub use paged::{attention, attention_with, kv_store};

use ferrum_engine::DType;
use ferrum_engine::ops::{
    Activation, Add, Argmax, Attention, Concat, ExpertGroups, GatherRows, Glu, Matmul, MoeCombine, MoeMatmul, MoeRoute,
    Op, OpKind, RmsNorm, Rope, RopeStyle, RouterScoring, Sample, Scale, Softcap,
};
use ferrum_engine::quant::fp8;
use ferrum_engine::quant::{
    Fp8Scaling, GgmlBlocks, GgmlType, Int8Rule, MxScaleRule, Nvfp4Convention, QuantFormat, QuantizedMatrix, ggml,
};
use half::{bf16, f16};

/// A tensor on the host. Float data is stored as f32 already rounded to
/// `dtype`, so the upload is exact and the oracle sees what the backend sees.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub data: HostData,
}

#[derive(Clone, Debug)]
pub enum HostData {
    F32(Vec<f32>),
    U32(Vec<u32>),
    /// A packed weight, uploaded with `Backend::upload_quantized`.
    Quant(QuantizedMatrix),
}

impl HostTensor {
    pub fn f32(shape: &[usize], data: Vec<f32>) -> Self {
        Self::float(shape, DType::F32, data)
    }

    /// Float data rounded to `dtype` (f32, f16 or bf16).
    pub fn float(shape: &[usize], dtype: DType, data: Vec<f32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "shape {shape:?}");
        let data = match dtype {
            DType::F32 => data,
            DType::F16 => data.into_iter().map(|v| f16::from_f32(v).to_f32()).collect(),
            DType::BF16 => data.into_iter().map(|v| bf16::from_f32(v).to_f32()).collect(),
            DType::F8E4M3 => data.into_iter().map(|v| fp8::decode(fp8::encode_saturating(v))).collect(),
            DType::U32 | DType::Quant(_) => panic!("float tensor with dtype {dtype}"),
        };
        HostTensor { shape: shape.to_vec(), dtype, data: HostData::F32(data) }
    }

    /// A quantized weight [rows, cols] of dtype `Quant(m.format())`.
    pub fn quant(m: QuantizedMatrix) -> Self {
        HostTensor { shape: vec![m.rows(), m.cols()], dtype: DType::Quant(m.format()), data: HostData::Quant(m) }
    }

    /// The packed weight, if this is one.
    pub fn quantized(&self) -> Option<&QuantizedMatrix> {
        match &self.data {
            HostData::Quant(m) => Some(m),
            _ => None,
        }
    }

    pub fn u32(shape: &[usize], data: Vec<u32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "shape {shape:?}");
        HostTensor { shape: shape.to_vec(), dtype: DType::U32, data: HostData::U32(data) }
    }

    /// Little-endian elements of `dtype`, as `Backend::upload` takes them.
    pub fn bytes(&self) -> Vec<u8> {
        match (&self.data, self.dtype) {
            (HostData::F32(v), DType::F32) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (HostData::F32(v), DType::F16) => v.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
            (HostData::F32(v), DType::BF16) => v.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
            (HostData::F32(v), DType::F8E4M3) => v.iter().map(|&x| fp8::encode_saturating(x)).collect(),
            (HostData::U32(v), DType::U32) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (_, d) => panic!("host data does not match dtype {d}"),
        }
    }

    /// Float values widened to f64 (exact: they were rounded to `dtype`
    /// already; a quantized weight gives its exact dequantization).
    pub fn f64s(&self) -> Vec<f64> {
        match &self.data {
            HostData::Quant(m) => m.dequantize().into_iter().map(f64::from).collect(),
            HostData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::U32(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    pub fn u32s(&self) -> &[u32] {
        match &self.data {
            HostData::U32(v) => v,
            HostData::F32(_) | HostData::Quant(_) => panic!("u32s() on a float tensor"),
        }
    }
}

/// One conformance case.
#[derive(Clone, Debug)]
pub struct Case {
    pub op: Op,
    pub inputs: Vec<HostTensor>,
    /// The output's contents before the op runs: kv_store updates its cache
    /// in place, so the untouched slots must come back unchanged.
    pub init_out: Option<HostTensor>,
    /// The dtype `Backend::supports` is asked about: the weight's for matmul
    /// and gather_rows, f32 for the rest.
    pub dtype: DType,
    /// Shapes and parameters, e.g. "rows=5, cols=4099, eps=1e-6".
    pub dims: String,
}

impl Case {
    pub fn kind(&self) -> OpKind {
        self.op.kind()
    }

    /// `rms_norm(dtype=f32, rows=5, cols=4099, eps=1e-6)`
    pub fn describe(&self) -> String {
        format!("{}(dtype={}, {})", self.kind().name(), self.dtype, self.dims)
    }
}

/// The dtypes each op's primary operand may have. No catch-all arm: a new op
/// must say here what it takes, and `matrix_covers_every_op_kind` then
/// demands cases for it.
pub fn op_dtypes(kind: OpKind) -> Vec<DType> {
    let quant = QUANT_FORMATS.iter().chain(&GGML_FORMATS).map(|&f| DType::Quant(f));
    [DType::F32, DType::F16, DType::BF16].into_iter().chain(quant).filter(|&d| kind.takes(d)).collect()
}

/// Every quantized weight layout the matmul cases cover (`QuantizedMatrix::format`
/// of each: MXFP4 and INT8 report their default rule whichever made them).
pub const QUANT_FORMATS: [QuantFormat; 9] = [
    QuantFormat::Nvfp4(Nvfp4Convention::ModelOpt),
    QuantFormat::Nvfp4(Nvfp4Convention::CompressedTensors),
    QuantFormat::Mxfp4(MxScaleRule::Ocp),
    QuantFormat::Fp8(Fp8Scaling::PerTensor),
    QuantFormat::Fp8(Fp8Scaling::PerChannel),
    QuantFormat::Fp8(Fp8Scaling::Block { rows: 16, cols: 32 }),
    QuantFormat::Int8(Int8Rule::CompressedTensors),
    QuantFormat::Int4 { group: 32, symmetric: true },
    QuantFormat::Int4 { group: 32, symmetric: false },
];

/// GGUF's block formats, as random blocks (there is no quantizer for them).
pub const GGML_FORMATS: [QuantFormat; 10] = {
    let t = ggml::PACKED_TYPES;
    [
        QuantFormat::Ggml(t[0]),
        QuantFormat::Ggml(t[1]),
        QuantFormat::Ggml(t[2]),
        QuantFormat::Ggml(t[3]),
        QuantFormat::Ggml(t[4]),
        QuantFormat::Ggml(t[5]),
        QuantFormat::Ggml(t[6]),
        QuantFormat::Ggml(t[7]),
        QuantFormat::Ggml(t[8]),
        QuantFormat::Ggml(t[9]),
    ]
};

/// SplitMix64: tiny, seeded, identical on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-amp, amp).
    pub fn uniform(&mut self, amp: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
        (2.0 * unit - 1.0) * amp
    }

    pub fn vec(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(amp)).collect()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// 0..n in a random order (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// Every case, in a fixed order.
pub fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut seed = 0u64;
    let mut rng = || {
        seed += 1;
        Rng::new(seed)
    };
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let ids = [0, 36, 5, 5, 17, 1, 36, 2, 30]; // repeats, first and last row
        cases.push(gather_rows(&mut rng(), dtype, 37, 129, &ids));
    }
    cases.push(rms_norm(&mut rng(), 5, 4099, 1e-6, false));
    cases.push(rms_norm(&mut rng(), 3, 64, 1e-5, true));
    cases.push(rms_norm(&mut rng(), 1, 1, 1e-6, false));
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        cases.push(matmul(&mut rng(), dtype, 7, 129, 33, false));
        cases.push(matmul(&mut rng(), dtype, 7, 129, 33, true));
        cases.push(matmul(&mut rng(), dtype, 3, 4099, 5, false));
        cases.push(matmul(&mut rng(), dtype, 1, 64, 257, true));
    }
    // quantized weights: odd n, k a multiple of the block (odd where the block
    // is 1 element), a decode-sized and a prefill-sized x; FP8 16x32 blocks
    // leave partial blocks at both edges
    for format in QUANT_FORMATS.into_iter().chain(GGML_FORMATS) {
        let block = match format {
            QuantFormat::Nvfp4(_) => 16,
            QuantFormat::Mxfp4(_) | QuantFormat::Int4 { .. } => 32,
            QuantFormat::Fp8(Fp8Scaling::Block { .. }) => 25,
            QuantFormat::Fp8(_) | QuantFormat::Int8(_) => 65,
            QuantFormat::Ggml(ty) => ty.block_size(),
        };
        cases.push(quant_matmul(&mut rng(), format, 3, 3 * block, 33, true));
        cases.push(quant_matmul(&mut rng(), format, 11, 5 * block, 17, false));
        // a quantized embedding table: rows dequantized by id
        let ids = [0, 8, 3, 3, 1];
        cases.push(quant_gather_rows(&mut rng(), format, 9, 2 * block, &ids));
    }
    // (style, heads, head_dim, rotary_dim / 2, attention_scale, positions):
    // full and partial rotary; positions up to 70000 catch imprecise sin/cos.
    let pos = [0, 1, 2, 17, 100, 511, 2047];
    let ropes: [(_, _, _, _, _, &[u32]); 4] = [
        (RopeStyle::Neox, 3, 64, 32, 1.0, &pos),
        (RopeStyle::Interleaved, 3, 64, 32, 1.0, &pos),
        (RopeStyle::Neox, 2, 48, 12, 1.1, &[0, 5, 4095, 10000, 32767]),
        (RopeStyle::Interleaved, 2, 50, 8, 0.9, &[3, 9, 70000]),
    ];
    for (style, heads, head_dim, half, scale, pos) in ropes {
        cases.push(rope(&mut rng(), style, [heads, head_dim, half], scale, pos));
    }
    // (context length after this step, new tokens) per sequence: a prefill,
    // a decode step and a chunk continuing a sequence, in one batch.
    let mixed: &[(usize, usize)] = &[(37, 37), (20, 1), (50, 5)];
    cases.push(kv_store(&mut rng(), DType::F32, 16, 2, 32, mixed));
    cases.push(kv_store(&mut rng(), DType::F32, 3, 2, 32, mixed));
    cases.push(kv_store(&mut rng(), DType::F32, 3, 1, 7, &[(1, 1), (8, 8)]));
    // caches of 16 and 8 bits (--kv-cache-dtype): rows rounded on the way in
    for dtype in [DType::F16, DType::BF16, DType::F8E4M3] {
        cases.push(kv_store(&mut rng(), dtype, 16, 2, 32, mixed));
        cases.push(kv_store(&mut rng(), dtype, 3, 1, 8, &[(1, 1), (8, 8)]));
    }
    let inv = |d: usize| 1.0 / (d as f32).sqrt();
    // (heads, kv_heads, head_dim, block_size, window, softcap, scale, seqs)
    let attentions: [(_, _, _, _, _, _, _, &[(usize, usize)]); 5] = [
        (8, 2, 32, 16, None, None, inv(32), mixed),
        (8, 2, 32, 3, Some(7), Some(1.5), 0.5, mixed),
        (8, 2, 32, 16, Some(20), None, inv(32), mixed),
        (4, 4, 16, 3, None, None, inv(16), &[(1, 1), (9, 2), (4, 4)]),
        (6, 1, 64, 16, None, Some(2.0), 0.3, &[(70, 3), (33, 33)]),
    ];
    for (heads, kv_heads, d, block_size, window, softcap, scale, seqs) in attentions {
        let op = Attention { block_size, scale, softcap, window };
        cases.push(attention(&mut rng(), op, [heads, kv_heads, d], seqs));
    }
    // gpt-oss: sinks, with and without a window, a decode step and a prefill
    let sinked = Attention { block_size: 16, scale: inv(32), softcap: None, window: Some(5) };
    cases.push(attention_with(&mut rng(), sinked.clone(), [8, 2, 32], mixed, true, DType::F32));
    let unwindowed = Attention { window: None, ..sinked.clone() };
    cases.push(attention_with(&mut rng(), unwindowed, [4, 4, 16], &[(1, 1), (9, 2)], true, DType::F32));
    // reading caches of 16 and 8 bits
    for dtype in [DType::F16, DType::BF16, DType::F8E4M3] {
        let op = Attention { block_size: 16, scale: inv(32), softcap: None, window: None };
        cases.push(attention_with(&mut rng(), op, [8, 2, 32], mixed, false, dtype));
        cases.push(attention_with(&mut rng(), sinked.clone(), [4, 1, 64], &[(70, 3), (9, 9)], true, dtype));
    }
    // DeepSeek-V3.2: the indexer, attention over its choice, its LayerNorm
    cases.extend(sparse::cases(&mut rng));
    // gpt-oss's clamp (7.0) and one inside the inputs' range, so both sides clamp
    let clamped = |limit| Activation::SwigluClamped { alpha: 1.702, limit };
    for act in [Activation::Silu, Activation::GeluTanh, clamped(7.0), clamped(1.5)] {
        cases.push(glu(&mut rng(), act, &[3, 1031]));
    }
    cases.push(add(&mut rng(), &[4099]));
    cases.push(add(&mut rng(), &[5, 77]));
    cases.push(scale(&mut rng(), 2048f32.sqrt(), &[5, 77])); // Gemma's sqrt(hidden)
    cases.push(scale(&mut rng(), -0.5, &[4099]));
    cases.push(softcap(&mut rng(), 30.0, 100.0, &[3, 1031])); // Gemma 2's final logits
    cases.push(softcap(&mut rng(), 0.5, 4.0, &[257]));
    // every row pattern, in rows of odd length and of less than a warp;
    // vocab-sized rows; one element; whole workgroups (64, 256) and one past
    cases.push(argmax(&mut rng(), ArgmaxRow::ALL.len(), 1031));
    cases.push(argmax(&mut rng(), 2 * ArgmaxRow::ALL.len(), 7));
    cases.push(argmax(&mut rng(), 4, 50257));
    cases.push(argmax(&mut rng(), 2, 151_936));
    cases.push(argmax(&mut rng(), 1, 1));
    cases.push(argmax(&mut rng(), 3, 256));
    cases.push(argmax(&mut rng(), 3, 257));
    // temperatures from sharp to flat and 0 (greedy); NaN and -inf in rows;
    // vocab-sized rows; rows shorter than a warp and one past a workgroup
    cases.push(sample(&mut rng(), &[0.7, 1.0, 1.5, 0.0, 1.0, 0.3], 1031));
    cases.push(sample(&mut rng(), &[1.0, 2.0, 0.5], 7));
    cases.push(sample(&mut rng(), &[1.0, 0.8], 50257));
    cases.push(sample(&mut rng(), &[1.2], 151_936));
    cases.push(sample(&mut rng(), &[1.0, 1.0, 1.0], 256));
    cases.push(sample(&mut rng(), &[0.9, 1.0, 1.1], 257));
    cases.push(sample(&mut rng(), &[1.0], 1));
    // routers: Mixtral / Qwen3-MoE (softmax, renormalized or not), and
    // DeepSeek-V3 (sigmoid, choice bias, 4 groups of which 2 are kept)
    let route = |top_k, scoring, renormalize, groups, scale| MoeRoute { top_k, scoring, renormalize, groups, scale };
    cases.push(moe_route(&mut rng(), route(2, RouterScoring::Softmax, true, None, 1.0), 9, 8, false));
    cases.push(moe_route(&mut rng(), route(4, RouterScoring::Softmax, false, None, 1.0), 5, 60, false));
    let groups = Some(ExpertGroups { groups: 4, top_groups: 2 });
    cases.push(moe_route(&mut rng(), route(3, RouterScoring::Sigmoid, true, groups, 2.5), 7, 32, true));
    cases.push(moe_route(&mut rng(), route(1, RouterScoring::Sigmoid, false, None, 1.0), 3, 5, true));
    // expert-indexed matmuls in every weight dtype: gate/up (x per token) and
    // down (x per choice); n = 24 and 17 put experts on and off 8-row groups
    let floats = [DType::F32, DType::F16, DType::BF16];
    for dtype in floats.into_iter().chain(QUANT_FORMATS.into_iter().chain(GGML_FORMATS).map(DType::Quant)) {
        let k = match dtype {
            DType::Quant(QuantFormat::Ggml(ty)) => 2 * ty.block_size(),
            _ => 64,
        };
        cases.push(moe_matmul(&mut rng(), dtype, [4, 24, k], [5, 2], false, [true, false]));
        cases.push(moe_matmul(&mut rng(), dtype, [3, 17, k], [1, 3], true, [false, false]));
        cases.push(moe_matmul(&mut rng(), dtype, [8, 24, k], [13, 2], true, [false, false]));
    }
    // experts each with their own tensor scale (ModelOpt NVFP4 stacks), with and without a bias
    for (dtype, bias) in [(DType::F32, true), (DType::Quant("nvfp4".parse().expect("a format")), false)] {
        cases.push(moe_matmul(&mut rng(), dtype, [4, 24, 64], [5, 2], false, [bias, true]));
        cases.push(moe_matmul(&mut rng(), dtype, [3, 17, 64], [1, 3], true, [bias, true]));
    }
    cases.push(concat(&mut rng(), &[7, 4], 512, 64)); // MLA: latent and rotary parts of 4 heads
    cases.push(concat(&mut rng(), &[3, 1], 1, 1031));
    cases.push(moe_combine(&mut rng(), 5, 2, 33));
    cases.push(moe_combine(&mut rng(), 1, 8, 1031));
    cases
}

/// Router logits whose scores are well apart (a shuffled ladder of steps of
/// 0.4, plus noise of at most 0.05), so no backend's rounding reorders two
/// experts; with `bias`, a choice bias of the same kind.
pub fn moe_route(rng: &mut Rng, op: MoeRoute, tokens: usize, experts: usize, bias: bool) -> Case {
    let ladder = |rng: &mut Rng| -> Vec<f32> {
        let order = rng.permutation(experts);
        order
            .iter()
            .map(|&o| (o as f32 - experts as f32 / 2.0) * 0.4 / (experts as f32).sqrt() + rng.uniform(0.05))
            .collect()
    };
    let logits: Vec<f32> = (0..tokens).flat_map(|_| ladder(rng)).collect();
    let mut inputs = vec![HostTensor::f32(&[tokens, experts], logits)];
    if bias {
        inputs.push(HostTensor::f32(&[experts], ladder(rng).iter().map(|b| b * 0.01).collect()));
    }
    let dims = format!("tokens={tokens}, experts={experts}, {op:?}");
    case(Op::MoeRoute(op), inputs, DType::F32, dims)
}

/// A route as `moe_route` writes it: `top_k` weights, then as many distinct
/// expert ids, per token.
fn random_route(rng: &mut Rng, tokens: usize, top_k: usize, experts: usize) -> HostTensor {
    let mut route = Vec::with_capacity(tokens * 2 * top_k);
    for _ in 0..tokens {
        route.extend((0..top_k).map(|_| rng.uniform(0.5) + 0.5));
        route.extend(rng.permutation(experts)[..top_k].iter().map(|&e| e as f32));
    }
    HostTensor::f32(&[tokens, 2 * top_k], route)
}

/// moe_matmul over `experts` stacked [n, k] weights in `dtype`, with a bias
/// and a per-expert scale as asked.
pub fn moe_matmul(
    rng: &mut Rng,
    dtype: DType,
    [experts, n, k]: [usize; 3],
    [tokens, top_k]: [usize; 2],
    per_choice: bool,
    [bias, scaled]: [bool; 2],
) -> Case {
    let rows = if per_choice { tokens * top_k } else { tokens };
    let x = HostTensor::f32(&[rows, k], rng.vec(rows * k, 1.0));
    let w = match dtype {
        DType::Quant(format) => HostTensor::quant(quant_weight(rng, format, experts * n, k)),
        _ => HostTensor::float(&[experts * n, k], dtype, rng.vec(experts * n * k, 1.0)),
    };
    let mut inputs = vec![x, w, random_route(rng, tokens, top_k, experts)];
    if bias {
        inputs.push(HostTensor::f32(&[experts * n], rng.vec(experts * n, 4.0)));
    }
    if scaled {
        // NVFP4 experts' tensor scales are small: amax / 2688
        inputs
            .push(HostTensor::f32(&[experts], rng.vec(experts, 1.0).iter().map(|s| (s.abs() + 0.1) / 64.0).collect()));
    }
    let dims = format!(
        "experts={experts}, n={n}, k={k}, tokens={tokens}, top_k={top_k}, per_choice={per_choice}, bias={bias}, \
         scaled={scaled}"
    );
    case(Op::MoeMatmul(MoeMatmul { experts, scaled }), inputs, dtype, dims)
}

/// concat of a [lead.., m] and b [lead.., n].
pub fn concat(rng: &mut Rng, lead: &[usize], m: usize, n: usize) -> Case {
    let rows: usize = lead.iter().product();
    let shape = |w| lead.iter().copied().chain([w]).collect::<Vec<_>>();
    let inputs =
        vec![HostTensor::f32(&shape(m), rng.vec(rows * m, 1.0)), HostTensor::f32(&shape(n), rng.vec(rows * n, 1.0))];
    case(Op::Concat(Concat), inputs, DType::F32, format!("lead={lead:?}, m={m}, n={n}"))
}

pub fn moe_combine(rng: &mut Rng, tokens: usize, top_k: usize, n: usize) -> Case {
    let y = HostTensor::f32(&[tokens * top_k, n], rng.vec(tokens * top_k * n, 2.0));
    let inputs = vec![y, random_route(rng, tokens, top_k, 2 * top_k)];
    case(Op::MoeCombine(MoeCombine), inputs, DType::F32, format!("tokens={tokens}, top_k={top_k}, n={n}"))
}

fn case(op: Op, inputs: Vec<HostTensor>, dtype: DType, dims: String) -> Case {
    Case { op, inputs, init_out: None, dtype, dims }
}

pub fn gather_rows(rng: &mut Rng, dtype: DType, rows: usize, cols: usize, ids: &[u32]) -> Case {
    let table = HostTensor::float(&[rows, cols], dtype, rng.vec(rows * cols, 1.0));
    let idt = HostTensor::u32(&[ids.len()], ids.to_vec());
    let dims = format!("rows={rows}, cols={cols}, n={}", ids.len());
    case(Op::GatherRows(GatherRows), vec![table, idt], dtype, dims)
}

pub fn rms_norm(rng: &mut Rng, rows: usize, cols: usize, eps: f32, unit_offset: bool) -> Case {
    let x = HostTensor::f32(&[rows, cols], rng.vec(rows * cols, 2.0));
    let w = HostTensor::f32(&[cols], rng.vec(cols, 1.0));
    let mut dims = format!("rows={rows}, cols={cols}, eps={eps:e}");
    if unit_offset {
        dims += ", unit_offset";
    }
    case(Op::RmsNorm(RmsNorm { eps, unit_offset }), vec![x, w], DType::F32, dims)
}

pub fn matmul(rng: &mut Rng, dtype: DType, m: usize, k: usize, n: usize, bias: bool) -> Case {
    let mut inputs =
        vec![HostTensor::f32(&[m, k], rng.vec(m * k, 1.0)), HostTensor::float(&[n, k], dtype, rng.vec(n * k, 1.0))];
    if bias {
        inputs.push(HostTensor::f32(&[n], rng.vec(n, 4.0)));
    }
    let dims = format!("m={m}, k={k}, n={n}, bias={}", if bias { "yes" } else { "no" });
    case(Op::Matmul(Matmul), inputs, dtype, dims)
}

/// A [rows, cols] matrix in `format`: quantized from uniform f32 values, or
/// for GGUF's block formats random blocks with small f16 scales.
pub fn quant_weight(rng: &mut Rng, format: QuantFormat, rows: usize, cols: usize) -> QuantizedMatrix {
    match format {
        QuantFormat::Ggml(ty) => QuantizedMatrix::Ggml(random_blocks(rng, ty, rows, cols)),
        _ => QuantizedMatrix::quantize(format, &rng.vec(rows * cols, 1.0), rows, cols).expect("quantizable case"),
    }
}

/// Random codes and integer sub-scales; every f16 field a normal number of
/// magnitude 2^-8 .. 2^-4, either sign, so outputs stay O(1)..O(100).
pub fn random_blocks(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> GgmlBlocks {
    let mut bytes: Vec<u8> =
        (0..rows * cols / ty.block_size() * ty.type_size()).map(|_| rng.below(256) as u8).collect();
    for block in bytes.chunks_exact_mut(ty.type_size()) {
        for &at in ggml::blocks::f16_fields(ty) {
            let magnitude = 2f32.powf(-8.0 + 4.0 * (rng.uniform(0.5) + 0.5));
            let v = half::f16::from_f32(magnitude * rng.uniform(1.0).signum());
            block[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    GgmlBlocks::new(ty, rows, cols, bytes.into()).expect("whole blocks")
}

/// gather_rows from a table quantized to `format`.
pub fn quant_gather_rows(rng: &mut Rng, format: QuantFormat, rows: usize, cols: usize, ids: &[u32]) -> Case {
    let table = HostTensor::quant(quant_weight(rng, format, rows, cols));
    let idt = HostTensor::u32(&[ids.len()], ids.to_vec());
    let dims = format!("rows={rows}, cols={cols}, n={}", ids.len());
    case(Op::GatherRows(GatherRows), vec![table, idt], DType::Quant(format), dims)
}

/// A matmul whose weight is quantized to `format`.
pub fn quant_matmul(rng: &mut Rng, format: QuantFormat, m: usize, k: usize, n: usize, bias: bool) -> Case {
    let x = HostTensor::f32(&[m, k], rng.vec(m * k, 1.0));
    let w = quant_weight(rng, format, n, k);
    let mut inputs = vec![x, HostTensor::quant(w)];
    if bias {
        inputs.push(HostTensor::f32(&[n], rng.vec(n, 4.0)));
    }
    let dims = format!("m={m}, k={k}, n={n}, bias={}", if bias { "yes" } else { "no" });
    case(Op::Matmul(Matmul), inputs, DType::Quant(format), dims)
}

/// `rotary_dim = 2 * half`; half < head_dim / 2 makes partial rotary.
pub fn rope(rng: &mut Rng, style: RopeStyle, [heads, head_dim, half]: [usize; 3], scale: f32, pos: &[u32]) -> Case {
    let t = pos.len();
    let x = HostTensor::f32(&[t, heads, head_dim], rng.vec(t * heads * head_dim, 1.0));
    // Llama's frequencies, base 10000 over the rotary part.
    let inv_freq = (0..half).map(|i| 10000f32.powf(-(i as f32) / half as f32)).collect();
    let positions = HostTensor::u32(&[t], pos.to_vec());
    let inputs = vec![x, positions, HostTensor::f32(&[half], inv_freq)];
    let style_name = match style {
        RopeStyle::Neox => "neox",
        RopeStyle::Interleaved => "interleaved",
    };
    let max_pos = pos.iter().max().unwrap_or(&0);
    let dims = format!(
        "style={style_name}, T={t}, heads={heads}, head_dim={head_dim}, rotary_dim={}, \
         attention_scale={scale}, max_pos={max_pos}",
        2 * half
    );
    let op = Rope { style, attention_scale: scale };
    case(Op::Rope(op), inputs, DType::F32, dims)
}

pub fn glu(rng: &mut Rng, activation: Activation, shape: &[usize]) -> Case {
    let n = shape.iter().product();
    // gate spans the activation's tails as well as its bend near zero
    let inputs = vec![HostTensor::f32(shape, rng.vec(n, 8.0)), HostTensor::f32(shape, rng.vec(n, 2.0))];
    let name = match activation {
        Activation::Silu => "silu".to_string(),
        Activation::GeluTanh => "gelu_tanh".to_string(),
        Activation::SwigluClamped { alpha, limit } => format!("swiglu_clamped(alpha={alpha}, limit={limit})"),
    };
    case(Op::Glu(Glu { activation }), inputs, DType::F32, format!("act={name}, shape={shape:?}"))
}

pub fn add(rng: &mut Rng, shape: &[usize]) -> Case {
    let n = shape.iter().product();
    let inputs = vec![HostTensor::f32(shape, rng.vec(n, 1.0)), HostTensor::f32(shape, rng.vec(n, 1.0))];
    case(Op::Add(Add), inputs, DType::F32, format!("shape={shape:?}"))
}

pub fn scale(rng: &mut Rng, factor: f32, shape: &[usize]) -> Case {
    let x = HostTensor::f32(shape, rng.vec(shape.iter().product(), 1.0));
    let op = Op::Scale(Scale { factor });
    case(op, vec![x], DType::F32, format!("factor={factor}, shape={shape:?}"))
}

/// x in [-amp, amp): an amp several times the cap reaches tanh's flat tails.
pub fn softcap(rng: &mut Rng, cap: f32, amp: f32, shape: &[usize]) -> Case {
    let x = HostTensor::f32(shape, rng.vec(shape.iter().product(), amp));
    let op = Op::Softcap(Softcap { cap });
    case(op, vec![x], DType::F32, format!("cap={cap}, |x|<{amp}, shape={shape:?}"))
}

/// What an argmax row holds; row r of a case takes `ALL[r % ALL.len()]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArgmaxRow {
    /// Uniform in [-10, 10).
    Random,
    /// The max at three places, the lowest not first in the row.
    Tie,
    /// All in [-10, -1).
    Negative,
    /// -inf at every other place, negatives between.
    NegInfHalf,
    /// -inf everywhere: index 0.
    AllNegInf,
    /// NaN at 0 and every 7th place; NaN never wins.
    Nan,
    /// NaN everywhere: index 0.
    AllNan,
    /// +inf twice (and a NaN): the first +inf.
    PosInf,
    /// Negatives with -0.0 and +0.0 as the max: they tie.
    SignedZeros,
    /// One value everywhere: index 0.
    Constant,
}

impl ArgmaxRow {
    pub const ALL: [ArgmaxRow; 10] = [
        ArgmaxRow::Random,
        ArgmaxRow::Tie,
        ArgmaxRow::Negative,
        ArgmaxRow::NegInfHalf,
        ArgmaxRow::AllNegInf,
        ArgmaxRow::Nan,
        ArgmaxRow::AllNan,
        ArgmaxRow::PosInf,
        ArgmaxRow::SignedZeros,
        ArgmaxRow::Constant,
    ];

    fn name(self) -> &'static str {
        match self {
            ArgmaxRow::Random => "random",
            ArgmaxRow::Tie => "tie",
            ArgmaxRow::Negative => "negative",
            ArgmaxRow::NegInfHalf => "-inf/negative",
            ArgmaxRow::AllNegInf => "all -inf",
            ArgmaxRow::Nan => "nan",
            ArgmaxRow::AllNan => "all nan",
            ArgmaxRow::PosInf => "+inf x2",
            ArgmaxRow::SignedZeros => "-0/+0",
            ArgmaxRow::Constant => "constant",
        }
    }

    fn fill(self, rng: &mut Rng, cols: usize) -> Vec<f32> {
        let mut row = rng.vec(cols, 10.0);
        // places spread over the row, so different threads and warps hold them
        let (early, mid, last) = (cols / 3, cols / 2, cols - 1);
        match self {
            ArgmaxRow::Random => {}
            ArgmaxRow::Tie => {
                row.iter_mut().for_each(|v| *v /= 10.0);
                for c in [last, mid, early] {
                    row[c] = 5.0;
                }
            }
            ArgmaxRow::Negative => row.iter_mut().for_each(|v| *v = v.abs().mul_add(-0.9, -1.0)),
            ArgmaxRow::NegInfHalf => {
                for (c, v) in row.iter_mut().enumerate() {
                    *v = if c % 2 == 0 { f32::NEG_INFINITY } else { -1.0 - v.abs() };
                }
            }
            ArgmaxRow::AllNegInf => row.fill(f32::NEG_INFINITY),
            ArgmaxRow::Nan => row.iter_mut().step_by(7).for_each(|v| *v = f32::NAN),
            ArgmaxRow::AllNan => row.fill(f32::NAN),
            ArgmaxRow::PosInf => {
                row[last] = f32::INFINITY;
                row[mid] = f32::INFINITY;
                row[early] = f32::NAN;
            }
            ArgmaxRow::SignedZeros => {
                row.iter_mut().for_each(|v| *v = -1.0 - v.abs());
                row[last] = 0.0;
                row[mid] = -0.0;
            }
            ArgmaxRow::Constant => row.fill(1.5),
        }
        row
    }
}

/// `sample` with one row per temperature. Each uniform falls in the middle of
/// a step of its row's CDF (a column with at least 1% of the mass, picked at
/// random; rows have a few likely columns over a long tail, as LLM logits
/// do), so the expected column is clear of rounding in f32 and of summation
/// order; every third row holds NaN and -inf, which are never drawn.
pub fn sample(rng: &mut Rng, temperatures: &[f32], cols: usize) -> Case {
    let rows = temperatures.len();
    let (mut x, mut uniforms) = (Vec::new(), Vec::new());
    for (r, &t) in temperatures.iter().enumerate() {
        let mut row = rng.vec(cols, 8.0);
        // long rows: a few likely tokens over a long tail, as LLM logits are
        for _ in 0..if cols > 300 { 3 } else { 0 } {
            let hot = rng.below(cols);
            row[hot] = 20.0 + rng.uniform(2.0);
        }
        if r % 3 == 2 && cols > 2 {
            row[cols / 2] = f32::NAN;
            row[cols - 1] = f32::NEG_INFINITY;
        }
        // the f64 weights of the op's doc, to place u
        let tt = if t > 0.0 { t as f64 } else { 1.0 };
        let z: Vec<f64> = row.iter().map(|&v| if v.is_nan() { f64::NEG_INFINITY } else { v as f64 / tt }).collect();
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = z.iter().map(|&v| (v - m).exp()).collect();
        let total: f64 = w.iter().sum();
        let big: Vec<usize> = (0..cols).filter(|&c| w[c] >= 0.01 * total).collect(); // the hot ones at least
        let c = big[rng.below(big.len())];
        let before: f64 = w[..c].iter().sum();
        uniforms.push(((before + w[c] / 2.0) / total) as f32);
        x.extend(row);
    }
    let dims = format!("rows={rows}, cols={cols}, temperatures={temperatures:?}");
    let inputs = vec![
        HostTensor::f32(&[rows, cols], x),
        HostTensor::f32(&[rows], temperatures.to_vec()),
        HostTensor::f32(&[rows], uniforms),
    ];
    case(Op::Sample(Sample), inputs, DType::F32, dims)
}

/// x [rows, cols] whose rows cycle through every [`ArgmaxRow`] pattern.
pub fn argmax(rng: &mut Rng, rows: usize, cols: usize) -> Case {
    let patterns: Vec<ArgmaxRow> = (0..rows).map(|r| ArgmaxRow::ALL[r % ArgmaxRow::ALL.len()]).collect();
    let x: Vec<f32> = patterns.iter().flat_map(|p| p.fill(rng, cols)).collect();
    let names: Vec<&str> = patterns.iter().take(ArgmaxRow::ALL.len()).map(|p| p.name()).collect();
    let dims = format!("rows={rows}, cols={cols}, patterns=[{}]", names.join(", "));
    case(Op::Argmax(Argmax), vec![HostTensor::f32(&[rows, cols], x)], DType::F32, dims)
}
