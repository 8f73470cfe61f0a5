//! The MoE, attention and glu kernels run on the host (tests/host/kernels.cpp:
//! the .cu files behind a small CUDA shim, a std::thread per CUDA thread),
//! with the params and grids the backend launches, against the engine's
//! references: moe_route's choices exactly (ties, groups and NaN included),
//! moe_combine bit for bit, moe_matmul in every weight format but f16
//! (widened by PTX), with an expert chosen by more rows than a block gathers
//! at once and ids that name no expert; attention with and without gpt-oss's
//! sinks (GQA, windows, soft-capping, partial lanes), over caches of every
//! cache dtype (f32, f16, bf16, fp8 E4M3), widened exactly (every f16, bf16
//! and fp8 code read back as the reference reads it); kv_store rounding into
//! every cache dtype bit for bit (ties, overflow, saturation, subnormals, NaN
//! and an f32 bit-pattern sweep); glu in every activation,
//! the clamped SwiGLU's both clamps and NaN included. Only the GPU's own
//! behaviour (fused multiply-adds, real warps, its expf, and PTX's f16
//! conversions, for which the host runs common.cuh's written-out twins) is
//! left to a GPU run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use cudarc::driver::DeviceRepr;
use ferrum_engine::DType;
use ferrum_engine::ops::{
    Activation, CacheSliceMut, ExpertGroups, FloatSlice, Glu, KvStore, MoeCombine, MoeDims, MoeMatmul, MoeRoute,
    RouterScoring, WeightRows,
};
use ferrum_engine::quant::device_layout::pack;
use ferrum_engine::quant::ggml::PACKED_TYPES;
use ferrum_engine::quant::{QuantFormat, QuantizedMatrix};
use half::{bf16, f16};
use sha2::{Digest, Sha256};

use super::matmul::quant_suffix;
use super::matmul::tests::random_blocks;
use super::moe_matmul::{BLOCK_THREADS, float_params, quant_params};
use super::{
    BLOCK, KV_STORE_KERNELS, KvStoreParams, MAX_BLOCKS, by_cache_dtype, elementwise_grid, glu_params, moe_combine_grid,
    moe_combine_params, moe_route_params,
};
use crate::quant::ALIGN_WORDS;

/// What a test says when it cannot build the harness.
const NO_CXX: &str = "skipped: no C++ compiler (c++ or $CXX) to build the kernels for the host";

/// What the harness writes first into every output element.
const UNWRITTEN: u32 = 0x7fc0_dead;

/// The harness, built with the host's C++ compiler (`$CXX`, else `c++`),
/// sanitizers on (a shared array overrun must fail, not pass by luck); None
/// if there is no compiler. Kept in the temp dir by a hash of its source, so
/// reruns reuse it and old builds do not pile up.
fn harness() -> Option<&'static Path> {
    static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();
    EXE.get_or_init(|| {
        let strip = |src: &str| src.lines().filter(|l| !l.starts_with("#include \"")).collect::<Vec<_>>().join("\n");
        let headers =
            ferrum_kernels::HEADERS.iter().map(|(name, text)| (name.to_string(), text.replacen("#pragma once", "", 1)));
        let kernels = ferrum_kernels::KERNELS
            .iter()
            .filter(|(stem, _)| {
                stem.starts_with("moe_") || ["attention", "index_topk", "kv_store", "glu"].contains(stem)
            })
            .map(|(stem, src)| (format!("{stem}.cu"), strip(src)));
        let pasted = headers
            .chain(kernels)
            .fold(include_str!("../../tests/host/kernels.cpp").to_string(), |src, (name, text)| {
                src.replacen(&format!("#include \"{name}\""), &text, 1)
            });
        assert!(!pasted.contains("#include \""), "a file the harness includes was not pasted");
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let flags = ["-std=c++17", "-O1", "-ffp-contract=off", "-fno-strict-aliasing", "-pthread"];
        let sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"];
        let hash = Sha256::digest(format!("{cxx} {flags:?} {sanitize:?}\n{pasted}"));
        let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("ferrum-host-kernels-{hex}"));
        let exe = dir.join("kernels");
        if exe.exists() {
            return Some(exe);
        }
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join(format!("kernels.{}.cpp", std::process::id()));
        std::fs::write(&src, pasted).unwrap();
        let tmp = src.with_extension("exe");
        let status = Command::new(&cxx).args(flags).args(sanitize).arg("-o").arg(&tmp).arg(&src).status().ok()?;
        assert!(status.success(), "{cxx} failed to compile the kernels for the host");
        // renamed into place whole, so a concurrent run never sees half a file
        std::fs::rename(&tmp, &exe).unwrap();
        let _ = std::fs::remove_file(&src);
        Some(exe)
    })
    .as_deref()
}

/// The bytes of a params struct (#[repr(C)], 4-byte fields, no padding).
fn bytes_of<P: DeviceRepr>(p: &P) -> &[u8] {
    // SAFETY: P is one of the params structs: plain u32/f32 fields, no padding.
    unsafe { std::slice::from_raw_parts((p as *const P).cast::<u8>(), size_of::<P>()) }
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// Runs `kernel` over `grid` with `params` and the pointer arguments
/// `inputs`, and returns its `out_len`-float output buffer.
fn run_on_host<P: DeviceRepr>(
    exe: &Path,
    kernel: &str,
    grid: (u32, u32, u32),
    block: u32,
    params: &P,
    inputs: &[&[u8]],
    out_len: usize,
) -> Vec<f32> {
    static CALL: AtomicUsize = AtomicUsize::new(0);
    let dir = exe.with_file_name(format!("call-{}-{}", std::process::id(), CALL.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(grid.2, 1);
    let mut cmd = Command::new(exe);
    cmd.arg(kernel).args([grid.0, grid.1, block].map(|v| v.to_string())).arg(out_len.to_string());
    for (i, data) in std::iter::once(bytes_of(params)).chain(inputs.iter().copied()).enumerate() {
        let f = dir.join(format!("in{i}.bin"));
        // an absent input (no bias) is one unused word
        std::fs::write(&f, if data.is_empty() { &[0u8; 4][..] } else { data }).unwrap();
        cmd.arg(f);
    }
    let out = dir.join("out.bin");
    assert!(cmd.arg(&out).status().unwrap().success(), "{kernel}: the host run failed");
    let got: Vec<f32> = bytemuck::pod_collect_to_vec(&std::fs::read(&out).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(got.len(), out_len);
    if let Some(i) = got.iter().position(|v| v.to_bits() == UNWRITTEN) {
        panic!("{kernel}: output element {i} was never written");
    }
    got
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` values in [-scale, scale), or with `ties` from 5 levels only.
    fn vec(&mut self, n: usize, scale: f32, ties: bool) -> Vec<f32> {
        (0..n).map(|_| if ties { (self.next() % 5) as f32 * 0.5 - 1.0 } else { self.unit() } * scale).collect()
    }

    /// `top_k` distinct experts of `experts`.
    fn experts(&mut self, experts: usize, top_k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..experts).collect();
        for i in 0..top_k {
            let j = i + (self.next() % (experts - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(top_k);
        all
    }
}

/// Equal, or both NaN, or within `rel` of each other.
fn close(got: f32, want: f32, rel: f32) -> bool {
    got == want || (got.is_nan() && want.is_nan()) || (got - want).abs() <= rel * want.abs()
}

#[test]
fn moe_route_chooses_like_the_reference_on_the_host() {
    let Some(exe) = harness() else {
        eprintln!("{NO_CXX}");
        return;
    };
    let op = |top_k, scoring, renormalize, groups: Option<(usize, usize)>, scale| MoeRoute {
        top_k,
        scoring,
        renormalize,
        groups: groups.map(|(groups, top_groups)| ExpertGroups { groups, top_groups }),
        scale,
    };
    let (soft, sig) = (RouterScoring::Softmax, RouterScoring::Sigmoid);
    // (op, tokens, experts, bias, ties): Mixtral, Qwen3, DeepSeek-V3 shapes,
    // logits and biases from 5 levels (exact ties), experts past a warp and
    // at the kernel's limit
    let cases = [
        (op(2, soft, true, None, 1.0), 9, 8, false, false),
        (op(4, soft, false, None, 1.0), 5, 60, false, true),
        (op(3, sig, true, Some((4, 2)), 2.5), 7, 32, true, false),
        (op(6, sig, true, Some((8, 3)), 2.5), 6, 64, true, true),
        (op(8, soft, true, Some((16, 4)), 1.0), 3, 320, true, true),
        (op(1, sig, false, None, 1.0), 3, 5, true, true),
        (op(1, soft, true, None, 1.0), 2, 1, false, false),
        (op(8, soft, true, None, 1.0), 2, 1024, false, false),
        (op(8, sig, false, None, 1.0), 2, 1000, true, true),
    ];
    let mut rng = Rng(7);
    let mut nan_logits = rng.vec(4 * 40, 2.0, true);
    nan_logits[0] = f32::NAN; // token 0: choice 0 is NaN, so it is picked first
    nan_logits[40 + 7] = f32::NAN; // token 1: never picked
    nan_logits[2 * 40..3 * 40].fill(f32::NAN); // token 2: all NaN
    let mut runs: Vec<(MoeRoute, Vec<f32>, Option<Vec<f32>>, usize)> = cases
        .into_iter()
        .map(|(op, tokens, experts, bias, ties)| {
            let logits = rng.vec(tokens * experts, 3.0, ties);
            let bias = bias.then(|| rng.vec(experts, 0.05, ties));
            (op, logits, bias, experts)
        })
        .collect();
    runs.push((op(3, sig, true, None, 1.0), nan_logits.clone(), None, 40));
    runs.push((op(2, soft, true, None, 1.0), nan_logits, None, 40));
    // more experts than the kernel's shared arrays hold: refused on the host
    assert!(moe_route_params(&op(2, soft, true, None, 1.0), 1, 1025, false).is_err());
    for (op, logits, bias, experts) in runs {
        let tokens = logits.len() / experts;
        let k = op.top_k;
        let mut want = vec![0.0; tokens * 2 * k];
        op.reference(&logits, bias.as_deref(), experts, &mut want);
        let p = moe_route_params(&op, tokens, experts, bias.is_some()).unwrap();
        let bias_bytes = bias.as_deref().map_or(&[][..], f32_bytes);
        let got =
            run_on_host(exe, "moe_route", (p.tokens, 1, 1), 32, &p, &[f32_bytes(&logits), bias_bytes], want.len());
        for (t, (g, w)) in got.chunks(2 * k).zip(want.chunks(2 * k)).enumerate() {
            let what = format!("{op:?}, {experts} experts, token {t}: {g:?} vs {w:?}");
            assert_eq!(g[k..], w[k..], "ids: {what}");
            // exp in f64 rounded, against glibc's expf: the last bit may differ
            assert!(g[..k].iter().zip(&w[..k]).all(|(&g, &w)| close(g, w, 1e-6)), "weights: {what}");
        }
    }
}

#[test]
fn moe_combine_is_the_reference_bit_for_bit_on_the_host() {
    let Some(exe) = harness() else {
        eprintln!("{NO_CXX}");
        return;
    };
    let mut rng = Rng(11);
    for (tokens, top_k, n) in [(5, 2, 33), (1, 8, 1031), (3, 3, 256), (2, 1, 7)] {
        let y = rng.vec(tokens * top_k * n, 2.0, false);
        let route: Vec<f32> = (0..tokens)
            .flat_map(|_| {
                let w = rng.vec(top_k, 0.5, false).into_iter().map(|w| w + 0.5);
                w.chain(rng.experts(2 * top_k, top_k).into_iter().map(|e| e as f32)).collect::<Vec<_>>()
            })
            .collect();
        let mut want = vec![0.0; tokens * n];
        MoeCombine.reference(&y, &route, top_k, &mut want);
        let p = moe_combine_params(tokens, top_k, n).unwrap();
        let got = run_on_host(
            exe,
            "moe_combine",
            moe_combine_grid(&p),
            BLOCK,
            &p,
            &[f32_bytes(&y), f32_bytes(&route)],
            want.len(),
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "tokens={tokens} top_k={top_k} n={n}: element {i}: {g} vs {w}");
        }
    }
}

/// A weight format of the stack.
#[derive(Clone, Copy, Debug)]
enum Format {
    F32,
    Bf16,
    Quant(QuantFormat),
}

impl Format {
    /// A `k` of whole blocks (two GGUF blocks; 64 for the rest).
    fn k(self) -> usize {
        match self {
            Format::Quant(QuantFormat::Ggml(t)) => 2 * t.block_size(),
            _ => 64,
        }
    }
}

/// A stack of weight rows as the kernel reads it and the reference does.
enum Stack {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    Quant(QuantizedMatrix),
}

impl Stack {
    fn new(rng: &mut Rng, format: Format, rows: usize, k: usize) -> Stack {
        let w = rng.vec(rows * k, 1.0, false);
        match format {
            Format::F32 => Stack::F32(w),
            Format::Bf16 => Stack::Bf16(w.iter().map(|&v| bf16::from_f32(v)).collect()),
            Format::Quant(QuantFormat::Ggml(ty)) => {
                Stack::Quant(random_blocks(rng.next(), ty, rows, k / ty.block_size(), true))
            }
            Format::Quant(f) => Stack::Quant(QuantizedMatrix::quantize(f, &w, rows, k).unwrap()),
        }
    }

    fn rows(&self) -> WeightRows<'_> {
        match self {
            Stack::F32(w) => WeightRows::Float(FloatSlice::F32(w)),
            Stack::Bf16(w) => WeightRows::Float(FloatSlice::BF16(w)),
            Stack::Quant(m) => WeightRows::Quant(m),
        }
    }
}

/// One moe_matmul on the host, with `route` as given (ids naming no
/// expert included), with a random bias and per-expert scale as asked,
/// checked against the reference; rows whose id names no expert must be zeros.
#[allow(clippy::too_many_arguments)]
fn check_moe_matmul(
    exe: &Path,
    rng: &mut Rng,
    w: &Stack,
    experts: usize,
    d: MoeDims,
    route: &[f32],
    [bias, scaled]: [bool; 2],
    what: &str,
) {
    let (tokens, kk, k, n) = (d.tokens, d.top_k, d.k, d.n);
    let x = rng.vec(if d.per_choice { tokens * kk } else { tokens } * k, 1.0, false);
    let bias = bias.then(|| rng.vec(experts * n, 2.0, false));
    let scale = scaled.then(|| rng.vec(experts, 1.0, false).into_iter().map(|s| s.abs() + 0.25).collect::<Vec<_>>());
    let op = MoeMatmul { experts, scaled };
    // the reference on the route with every bad id replaced by expert 0
    let valid = |id: f32| id >= 0.0 && id < experts as f32 && id.fract() == 0.0;
    let mut clean = route.to_vec();
    for ids in clean.chunks_mut(2 * kk) {
        ids[kk..].iter_mut().filter(|id| !valid(**id)).for_each(|id| *id = 0.0);
    }
    let mut want = vec![0.0; tokens * kk * n];
    op.reference(&x, w.rows(), &clean, bias.as_deref(), scale.as_deref(), d, &mut want).unwrap();
    let (route_bytes, bias_bytes) = (f32_bytes(route), bias.as_deref().map_or(&[][..], f32_bytes));
    let scale_bytes = scale.as_deref().map_or(&[][..], f32_bytes);
    let has = [bias.is_some(), scale.is_some()];
    let got = match w {
        Stack::Quant(m) => {
            let packed = pack(m, ALIGN_WORDS);
            let p = quant_params(&packed.layout, d, experts, has).unwrap();
            let name = format!("moe_matmul_{}", quant_suffix(packed.layout.fmt));
            let inputs = [f32_bytes(&x), &packed.codes, &packed.scales, route_bytes, bias_bytes, scale_bytes];
            run_on_host(exe, &name, p.moe.grid(), BLOCK_THREADS, &p, &inputs, want.len())
        }
        Stack::F32(_) | Stack::Bf16(_) => {
            let (dtype, name, data) = match w {
                Stack::F32(v) => (ferrum_engine::DType::F32, "moe_matmul_f32", f32_bytes(v)),
                Stack::Bf16(v) => (ferrum_engine::DType::BF16, "moe_matmul_bf16", bytemuck::cast_slice(v)),
                Stack::Quant(_) => unreachable!(),
            };
            let p = float_params(dtype, d, experts, has).unwrap();
            let inputs = [f32_bytes(&x), data, route_bytes, bias_bytes, scale_bytes];
            run_on_host(exe, name, p.grid(), BLOCK_THREADS, &p, &inputs, want.len())
        }
    };
    let mut scratch = Vec::new();
    for (row, (g, w_row)) in got.chunks(n).zip(want.chunks(n)).enumerate() {
        let (t, j) = (row / kk, row % kk);
        let id = route[t * 2 * kk + kk + j];
        if !valid(id) {
            assert!(g.iter().all(|&v| v.to_bits() == 0), "{what}: row {row} (id {id}) is not zeros: {g:?}");
            continue;
        }
        let e = id as usize;
        let xr = &x[(if d.per_choice { row } else { t }) * k..][..k];
        for (c, (&g, &want)) in g.iter().zip(w_row).enumerate() {
            // f32 sums in another order: a bound from the terms' magnitudes
            let terms: f32 =
                w.rows().row(e * n + c, k, &mut scratch).unwrap().iter().zip(xr).map(|(a, b)| (a * b).abs()).sum();
            let terms = terms * scale.as_ref().map_or(1.0, |s| s[e]);
            let tol = 1e-5 * (terms + bias.as_ref().map_or(0.0, |b| b[e * n + c].abs())) + 1e-6;
            assert!((g - want).abs() <= tol, "{what}: [{row}, {c}]: {g} vs {want} (tolerance {tol})");
        }
    }
}

/// A route as moe_route writes it: weights, then `top_k` distinct experts
/// per token, the first of them `first` when given.
fn route(rng: &mut Rng, tokens: usize, top_k: usize, experts: usize, first: Option<usize>) -> Vec<f32> {
    (0..tokens)
        .flat_map(|_| {
            let mut ids = rng.experts(experts, top_k);
            if let Some(f) = first
                && let Some(at) = ids.iter().position(|&e| e == f)
            {
                ids.swap(0, at);
            } else if let Some(f) = first {
                ids[0] = f;
            }
            let weights = rng.vec(top_k, 0.5, false).into_iter().map(|w| w + 0.5);
            weights.chain(ids.into_iter().map(|e| e as f32)).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn moe_matmul_matches_the_reference_in_every_format_on_the_host() {
    let Some(exe) = harness() else {
        eprintln!("{NO_CXX}");
        return;
    };
    let quant = ["nvfp4", "nvfp4:ct", "mxfp4", "fp8", "fp8:channel", "int8", "int4:g32", "int4:g32:asym"]
        .map(|f| Format::Quant(f.parse().unwrap()));
    let ggml = PACKED_TYPES.map(|t| Format::Quant(QuantFormat::Ggml(t)));
    // (format, k): f32 and nvfp4 also with a k off the chunk path
    let mut cases = vec![(Format::F32, 64), (Format::F32, 42), (Format::Bf16, 64), (quant[0], 48)];
    cases.extend(quant.iter().chain(&ggml).map(|&f| (f, f.k())));
    let mut rng = Rng(3);
    for (format, k) in cases {
        // gate/up: x per token, bias and per-expert scale, n = 24 (3 column tiles), 5 tokens of 2 choices
        let (experts, n) = (4, 24);
        let w = Stack::new(&mut rng, format, experts * n, k);
        let d = MoeDims { tokens: 5, top_k: 2, per_choice: false, k, n };
        let r = route(&mut rng, d.tokens, d.top_k, experts, None);
        check_moe_matmul(exe, &mut rng, &w, experts, d, &r, [true, true], &format!("{format:?} k={k} per token"));
        // down: x per choice, n = 9 (a partial tile), ids naming no expert
        let (experts, n) = (3, 9);
        let w = Stack::new(&mut rng, format, experts * n, k);
        let d = MoeDims { tokens: 4, top_k: 3, per_choice: true, k, n };
        let mut r = route(&mut rng, d.tokens, d.top_k, experts, None);
        // ids sit at 3..6 of each route row of 6; -0.0 is expert 0
        for (at, bad) in [(3, -1.0), (4, 0.5), (9, f32::NAN), (10, 3.0), (16, 1e9), (17, -0.0)] {
            r[at] = bad;
        }
        check_moe_matmul(exe, &mut rng, &w, experts, d, &r, [true, false], &format!("{format:?} k={k} bad ids"));
    }
    // one expert chosen by 300 rows: the block gathers 256 at a time
    let (experts, n, k) = (3, 9, 64);
    let w = Stack::new(&mut rng, Format::F32, experts * n, k);
    let d = MoeDims { tokens: 300, top_k: 2, per_choice: true, k, n };
    let r = route(&mut rng, d.tokens, d.top_k, experts, Some(1));
    check_moe_matmul(exe, &mut rng, &w, experts, d, &r, [false, true], "300 rows of expert 1 (scaled)");
}

/// A KV cache's elements in their dtype: what the reference ops read and
/// write, and the bytes the kernels do.
enum Cache {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F8E4M3(Vec<u8>),
}

impl Cache {
    /// `bytes` (whole elements of `dtype`) as a cache.
    fn from_bytes(dtype: DType, bytes: &[u8]) -> Cache {
        match dtype {
            DType::F32 => Cache::F32(bytemuck::pod_collect_to_vec(bytes)),
            DType::F16 => Cache::F16(bytemuck::pod_collect_to_vec(bytes)),
            DType::BF16 => Cache::BF16(bytemuck::pod_collect_to_vec(bytes)),
            DType::F8E4M3 => Cache::F8E4M3(bytes.to_vec()),
            other => panic!("no cache of {other}"),
        }
    }

    /// `v` rounded into a cache of `dtype` as kv_store's reference rounds it.
    fn rounded(dtype: DType, v: &[f32]) -> Cache {
        let mut c = Cache::from_bytes(dtype, &vec![0; v.len() * dtype.size_bytes()]);
        c.slice_mut().store(0, v);
        c
    }

    fn slice_mut(&mut self) -> CacheSliceMut<'_> {
        match self {
            Cache::F32(c) => CacheSliceMut::F32(c),
            Cache::F16(c) => CacheSliceMut::F16(c),
            Cache::BF16(c) => CacheSliceMut::BF16(c),
            Cache::F8E4M3(c) => CacheSliceMut::F8E4M3(c),
        }
    }

    fn slice(&self) -> FloatSlice<'_> {
        match self {
            Cache::F32(c) => FloatSlice::F32(c),
            Cache::F16(c) => FloatSlice::F16(c),
            Cache::BF16(c) => FloatSlice::BF16(c),
            Cache::F8E4M3(c) => FloatSlice::F8E4M3(c),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Cache::F32(c) => bytemuck::cast_slice(c),
            Cache::F16(c) => bytemuck::cast_slice(c),
            Cache::BF16(c) => bytemuck::cast_slice(c),
            Cache::F8E4M3(c) => c,
        }
    }
}

/// f32 values whose rounding into f16, bf16 and fp8 is worth checking:
/// ties and the values beside them, each format's overflow and saturation,
/// subnormals (f32's and the formats'), infinities, NaN, -0; then two
/// patterns of low bits under every 16-bit top (every sign and exponent),
/// then random values of many scales.
fn rounding_cases(rng: &mut Rng, n: usize) -> Vec<f32> {
    let ulp = |x: f32, k: i32| f32::from_bits((x.to_bits() as i32 + k) as u32);
    let mut v = vec![0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, f32::from_bits(0x7f80_0001)];
    let edges = [
        1.0 + 1.0 / 2048.0,     // f16 tie, to even (down)
        1.0 + 3.0 / 2048.0,     // f16 tie, to even (up)
        65504.0,                // f16 max
        65520.0,                // f16 tie between max and inf: inf
        2.0f32.powi(-24),       // f16's smallest subnormal
        2.0f32.powi(-25),       // its tie with 0: 0
        3.0 * 2.0f32.powi(-25), // tie between 1 and 2 x 2^-24: 2
        2.0f32.powi(-14),       // f16's smallest normal
        1.0 + 1.0 / 256.0,      // bf16 tie, down
        1.0 + 3.0 / 256.0,      // bf16 tie, up
        f32::MAX,               // bf16 rounds it to inf
        1e-40,                  // f32 subnormal
        1.0625,                 // fp8 tie, down
        1.1875,                 // fp8 tie, up
        448.0,                  // fp8 max
        464.0,                  // fp8 tie past the max: saturates
        1000.0,                 // saturates
        1.0 / 1024.0,           // fp8 subnormal tie with 0
        3.0 / 1024.0,           // fp8 subnormal tie, up to 2
        1.0 / 64.0,             // fp8's smallest normal
        15.5 / 1024.0,          // just under it: rounds up to it
        1.0 / 512.0,            // fp8's smallest subnormal
    ];
    for e in edges {
        for x in [e, ulp(e, -1), ulp(e, 1)] {
            v.extend([x, -x]);
        }
    }
    let lows = [0x0000, 0x8000, 0x1000, 0x3000, 0x7fff, 0x8001, 0x0fff, 0x1001];
    for top in 0..=u16::MAX as u32 {
        for low in [lows[top as usize % 8], (rng.next() & 0xffff) as u32] {
            v.push(f32::from_bits(top << 16 | low));
        }
    }
    while v.len() < n {
        let scale = 10.0f32.powi((rng.next() % 16) as i32 - 10);
        v.push(rng.unit() * scale);
    }
    v.truncate(n);
    v
}

/// kv_store's kernel of every cache dtype, bit for bit against the
/// reference: `rounding_cases` into a cache of old random contents, with
/// the backend's grid and with two blocks striding over it all; a row of 5
/// (byte rows that straddle words) and rows of 256.
#[test]
fn kv_store_rounds_into_every_cache_dtype_bit_for_bit_on_the_host() {
    let Some(exe) = harness() else {
        eprintln!("{NO_CXX}");
        return;
    };
    let mut rng = Rng(23);
    // (tokens, kv_heads, head_dim, num_slots)
    for (tokens, kv_heads, head_dim, num_slots) in [(600, 2, 128, 640), (3, 1, 5, 8)] {
        let row = kv_heads * head_dim;
        let src = rounding_cases(&mut rng, tokens * row);
        let slots: Vec<u32> = rng.experts(num_slots, tokens).into_iter().map(|s| s as u32).collect();
        for dtype in DType::CACHE {
            let bytes = num_slots * row * dtype.size_bytes();
            // old contents: random bytes (whole words, as the harness copies them)
            let old: Vec<u8> = (0..bytes.div_ceil(4) * 4).map(|_| rng.next() as u8).collect();
            let mut want = Cache::from_bytes(dtype, &old[..bytes]);
            let op = KvStore { num_slots, dtype };
            op.reference(&src, &slots, want.slice_mut()).unwrap();
            let p = KvStoreParams { tokens: tokens as u32, row: row as u32, num_slots: num_slots as u32, _pad: 0 };
            let name = by_cache_dtype(dtype, KV_STORE_KERNELS).unwrap();
            let backend_grid = ((tokens * row) as u64).div_ceil(BLOCK as u64).min(MAX_BLOCKS) as u32;
            for grid in [(backend_grid, 1, 1), (2, 1, 1)] {
                let inputs = [f32_bytes(&src), bytemuck::cast_slice(&slots), &old[..]];
                let got = run_on_host(exe, name, grid, BLOCK, &p, &inputs, old.len() / 4);
                let got: &[u8] = bytemuck::cast_slice(&got);
                assert_eq!(got[bytes..], old[bytes..], "{dtype}: past the cache");
                let size = dtype.size_bytes();
                for (i, (g, w)) in got[..bytes].chunks(size).zip(want.bytes().chunks(size)).enumerate() {
                    let (slot, e) = (i / row, i % row);
                    let from = slots.iter().position(|&s| s as usize == slot).map(|t| src[t * row + e]);
                    assert_eq!(g, w, "{dtype}, grid {grid:?}: slot {slot} element {e} (from {from:?})");
                }
            }
            eprintln!("kv_store into a {dtype} cache: {} values rounded bit for bit", tokens * row);
        }
    }
}

#[test]
fn glu_in_every_activation_matches_the_reference_on_the_host() {
    let Some(exe) = harness() else {
        eprintln!("{NO_CXX}");
        return;
    };
    let clamped = |limit| Activation::SwigluClamped { alpha: 1.702, limit };
    let mut rng = Rng(13);
    // gpt-oss's clamp (7.0) and one inside the inputs' range, so both sides clamp
    for activation in [Activation::Silu, Activation::GeluTanh, clamped(7.0), clamped(1.5)] {
        let n = 3 * 1031;
        let mut gate = rng.vec(n, 8.0, false);
        let mut up = rng.vec(n, 2.0, false);
        // the clamps' edges, infinities and NaN in either input
        let specials = [0.0, -0.0, 1.5, -1.5, 7.0, -7.0, 100.0, -100.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        for (i, &s) in specials.iter().enumerate() {
            (gate[i], up[i]) = (s, 0.75);
            (gate[100 + i], up[100 + i]) = (0.75, s);
        }
        let mut want = vec![0.0; n];
        Glu { activation }.reference(&gate, &up, &mut want);
        let p = glu_params(activation, n);
        // the backend's grid, and two blocks striding over all of it
        for grid in [elementwise_grid(p.n), (2, 1, 1)] {
            let got = run_on_host(exe, "glu", grid, BLOCK, &p, &[f32_bytes(&gate), f32_bytes(&up)], n);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                // the same expf and tanhf (glibc's), but sqrt(2/pi) rounded
                // apart, which gelu's 1 + tanh cancels into: a bound from the
                // size of gate * up where the result is finite
                let near = w.is_finite() && (g - w).abs() <= 1e-6 * (gate[i] * up[i]).abs();
                assert!(
                    close(g, w, 1e-6) || near,
                    "{activation:?}, grid {grid:?}: element {i} (gate {}, up {}): {g} vs {w}",
                    gate[i],
                    up[i]
                );
            }
        }
    }
}

mod attention;
mod sparse;
