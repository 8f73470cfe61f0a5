//! KV caches of f16, bf16 and fp8 on wgpu. The conformance cases store values
//! each dtype holds exactly; here kv_store must round everything else as the
//! engine does, bit for bit (ties, subnormals, overflow, saturation, -0);
//! attention must read rows that are not whole u32 words; and a model with
//! such a cache must generate what the cpu reference does with the same cache.

mod common;

use std::sync::Arc;

use ferrum_backend_wgpu::Options;
use ferrum_conformance::cases::{self, Rng};
use ferrum_conformance::fixtures::{fixture_dir, max_err_over_std};
use ferrum_conformance::harness::check;
use ferrum_engine::generate::{GenerateOptions, generate};
use ferrum_engine::logits::{LogitsMode, sequence_logits};
use ferrum_engine::ops::{Attention, KvStore, Op};
use ferrum_engine::source::ModelSource;
use ferrum_engine::{Backend, BackendExt, CpuBackend, DType, Model};

const CACHE_DTYPES: [DType; 3] = [DType::F16, DType::BF16, DType::F8E4M3];

/// f32 values around every rounding boundary of f16, bf16 and fp8 E4M3.
fn edge_values() -> Vec<f32> {
    let mut bits = Vec::new();
    // each binade from f32 subnormals (e = 0) past f16's and fp8's ranges,
    // with mantissas just below, on and above each format's halfway point
    let tails = [0, 1, 0xfff, 0x1000, 0x1001, 0x3000, 0x7fff, 0x8000, 0x8001, 0x18000, 0x7ffff, 0x80000, 0x80001];
    let tails = tails.into_iter().chain([0x180000, 0x280000, 0x380000, 0x780000, 0x7fffff]);
    for e in (0..=1).chain(95..=150) {
        for tail in tails.clone() {
            bits.push((e << 23) | tail);
        }
    }
    let specials = [0.0, 448.0, 464.0, 465.0, 500.0, 65504.0, 65519.0, 65520.0, 1e30, f32::MAX, f32::INFINITY];
    bits.extend(specials.iter().map(|v: &f32| v.to_bits()));
    // and a spread of everything else (NaN left out: its payload is no contract)
    let mut x = 0x1234_5678u32;
    for _ in 0..512 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        if x & 0x7fff_ffff <= 0x7f80_0000 {
            bits.push(x & 0x7fff_ffff);
        }
    }
    let both_signs = bits.iter().flat_map(|&b| [b, b | 0x8000_0000]);
    let mut values: Vec<f32> = both_signs.map(f32::from_bits).collect();
    values.resize(values.len().next_multiple_of(8), 1.0);
    values
}

/// The cache bytes after kv_store of `values` (rows of 2 heads x 4) into a
/// cache of `dtype` whose other slots hold a byte pattern.
fn stored(b: &dyn Backend, dtype: DType, values: &[f32]) -> Vec<u8> {
    let t = values.len() / 8;
    let num_slots = t + 5;
    // reversed, slots 0..5 left alone
    let slots: Vec<u32> = (0..t).map(|i| (num_slots - 1 - i) as u32).collect();
    let init: Vec<u8> = (0..num_slots * 8 * dtype.size_bytes()).map(|i| (i * 37 + 11) as u8).collect();
    let cache = b.upload(&[num_slots, 2, 4], dtype, &init).unwrap();
    let src = b.upload_f32(&[t, 2, 4], values).unwrap();
    let slots = b.upload_u32(&[t], &slots).unwrap();
    b.execute(&Op::KvStore(KvStore { num_slots, dtype }), &[&src, &slots], &cache).unwrap();
    b.read(&cache).unwrap()
}

#[test]
fn kv_store_rounds_as_the_engine_does() {
    let Some(wgpu) = common::backend(Options::default()) else { return };
    let cpu = CpuBackend::new();
    let values = edge_values();
    for dtype in CACHE_DTYPES {
        let (got, want) = (stored(&wgpu, dtype, &values), stored(&cpu, dtype, &values));
        let size = dtype.size_bytes();
        let first_bad = got.chunks(size).zip(want.chunks(size)).position(|(g, w)| g != w);
        if let Some(i) = first_bad {
            let (slot, c) = (i / 8, i % 8);
            let value = (slot >= 5).then(|| values[(values.len() / 8 - 1 - (slot - 5)) * 8 + c]);
            let (g, w) = (&got[i * size..(i + 1) * size], &want[i * size..(i + 1) * size]);
            panic!("{dtype}: element {i} (stored {value:?}): wgpu {g:02x?}, cpu {w:02x?}");
        }
    }
}

/// One invocation writes a whole u32 word, so a row must be whole words.
#[test]
fn kv_store_refuses_rows_of_partial_words() {
    let Some(b) = common::backend(Options::default()) else { return };
    for (dtype, head_dim, ok) in [(DType::F8E4M3, 6, false), (DType::F16, 3, false), (DType::F16, 6, true)] {
        let cache = b.alloc(&[4, 1, head_dim], dtype).unwrap();
        let src = b.upload_f32(&[1, 1, head_dim], &vec![1.0; head_dim]).unwrap();
        let slots = b.upload_u32(&[1], &[2]).unwrap();
        let r = b.execute(&Op::KvStore(KvStore { num_slots: 4, dtype }), &[&src, &slots], &cache);
        match r {
            Ok(()) => assert!(ok, "{dtype} head_dim {head_dim} was accepted"),
            Err(e) => assert!(!ok && e.to_string().contains("multiple of"), "{dtype} head_dim {head_dim}: {e}"),
        }
    }
}

/// Attention over rows that do not start on a u32 word (odd head dims for
/// 16 bits, head dims not a multiple of 4 for fp8), whole and windowed.
#[test]
fn attention_reads_rows_of_partial_words() {
    let small = Options { max_binding_bytes: Some(1024), binding_align: Some(256), ..Options::default() };
    let (Some(whole), Some(windowed)) = (common::backend(Options::default()), common::backend(small)) else {
        return;
    };
    let mut rng = Rng::new(7);
    let mut failures = Vec::new();
    for dtype in CACHE_DTYPES {
        for d in [5, 6, 34] {
            let op = Attention { block_size: 4, scale: 0.3, softcap: None, window: None };
            let case = cases::attention_with(&mut rng, op, [4, 2, d], &[(21, 21), (9, 2)], d == 6, dtype);
            for b in [&whole, &windowed] {
                let o = check(b, &case);
                println!("{}", o.line());
                if !o.passed() {
                    failures.push(o.line());
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The llama fixture with each cache dtype: logits within the GPU tolerance of
/// the cpu reference's with the same cache, and the same greedy tokens.
/// fp8 rounds a key or value to 1 part in 16, so a last-ulp difference in the
/// f32 k/v the two backends compute can flip one element's code; on this
/// tiny random model that stays far below the gap between its top logits.
#[test]
fn a_model_generates_with_each_cache_dtype() {
    let Some(wgpu) = common::backend(Options::default()) else { return };
    let (wgpu, cpu): (Arc<dyn Backend>, Arc<dyn Backend>) = (Arc::new(wgpu), Arc::new(CpuBackend::new()));
    let source = ModelSource::open(&fixture_dir("llama")).unwrap();
    let prompt = [1, 15, 27, 3, 99, 42, 7];
    let opts = GenerateOptions { max_tokens: 8, ..Default::default() };
    for dtype in CACHE_DTYPES {
        let mut config = source.config.clone();
        config.kv_cache_dtype = dtype;
        let load = |b: &Arc<dyn Backend>| Model::from_store(config.clone(), &source.weights, b.clone()).unwrap();
        let (on_wgpu, on_cpu) = (load(&wgpu), load(&cpu));
        for mode in [LogitsMode::Prefill, LogitsMode::Decode] {
            let got = sequence_logits(&on_wgpu, &prompt, mode).unwrap();
            let want = sequence_logits(&on_cpu, &prompt, mode).unwrap();
            let err = max_err_over_std(&got.data, &want.data);
            println!("llama, {dtype} cache, {mode:?}: max_err/std {err:.2e}");
            assert!(err < 2e-3, "{dtype} {mode:?}: {err:.2e}");
        }
        let got = generate(&on_wgpu, &prompt, &opts, None, |_| {}).unwrap().tokens;
        let want = generate(&on_cpu, &prompt, &opts, None, |_| {}).unwrap().tokens;
        assert_eq!(got.len(), 8);
        assert_eq!(got, want, "greedy tokens with a {dtype} cache");
    }
}
