//! Whole-model conformance: every fixture's logits match transformers in
//! prefill and decode mode, and greedy generation reproduces its ids, on the
//! cpu reference, the fast cpu backend and on wgpu when present (`FERRUM_REQUIRE_BACKENDS` makes
//! an absent wgpu a failure, in ops.rs).

use std::sync::Arc;

use ferrum_conformance::fixtures::{FIXTURES, Reference, fixture_dir, max_err_over_std};
use ferrum_engine::generate::{GenerateOptions, generate};
use ferrum_engine::logits::{LogitsMode, sequence_logits};
use ferrum_engine::sampler::{DevicePick, SamplingParams};
use ferrum_engine::{Backend, CpuBackend, Model};

/// f32 end to end; transformers' float32 and ours differ only in summation
/// order and libm, about 1e-6 of the logits' spread.
const TOLERANCE_F32: f64 = 1e-4;

/// wgpu, f32 end to end too, but a GPU's exp/tanh/sin may be a few ulp off
/// libm's and reductions run in another order: the bar set for GPU backends.
const TOLERANCE_GPU: f64 = 2e-3;
/// The fast CPU backend meets quantized weights with activations rounded to
/// i8, as llama.cpp does; each op stays within nmse 2e-4 of the reference
/// (`ops.rs`), the tiny random model amplifies it: measured 4.4e-2
/// (gpt-oss-mxfp4, its experts), 6.0e-2 (deepseek-v3-nvfp4, its MLPs), 0.13
/// (qwen3-moe-nvfp4-ct, every linear; the same model quantized on load gives
/// 0.13 with nvfp4:ct and 0.15 with int8 against the CPU reference). A wrong
/// expert or scale would cost O(1).
const TOLERANCE_FAST_QUANT: f64 = 0.2;

fn cpu() -> Arc<dyn Backend> {
    Arc::new(CpuBackend::new())
}

/// The backends the fixtures run on, with their tolerance.
fn backends() -> Vec<(Arc<dyn Backend>, f64)> {
    let mut list = vec![(cpu(), TOLERANCE_F32)];
    // the fast CPU backend: f32 end to end as well, other summation order
    list.push((ferrum_backend_cpu::open(None).expect("the fast cpu backend starts"), TOLERANCE_F32));
    match ferrum_backend_wgpu::open() {
        Ok(wgpu) => list.push((wgpu, TOLERANCE_GPU)),
        Err(why) => println!("wgpu absent, fixtures run on cpu only: {why}"),
    }
    list
}

#[test]
fn logits_match_transformers_in_prefill_and_decode() {
    let mut failures = Vec::new();
    for (backend, tolerance) in backends() {
        for name in FIXTURES {
            let dir = fixture_dir(name);
            let reference = Reference::load(&dir).unwrap();
            let model = Model::load(&dir, backend.clone()).unwrap();
            let quantized = ["mxfp4", "fp8", "nvfp4"].iter().any(|f| name.contains(f));
            let tolerance = if backend.name() == "cpu" && quantized { TOLERANCE_FAST_QUANT } else { tolerance };
            for mode in [LogitsMode::Prefill, LogitsMode::Decode] {
                let got = sequence_logits(&model, &reference.input_ids, mode).unwrap();
                let err = max_err_over_std(&got.data, &reference.logits);
                let verdict = if err <= tolerance { "OK" } else { "FAIL" };
                println!("model {name} mode={mode:?} {}: {verdict} max_err/std={err:.2e}", backend.name());
                if err > tolerance {
                    failures.push(format!("{name} {mode:?} {}: {err:.2e} > {tolerance:.0e}", backend.name()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "over tolerance: {failures:?}");
}

#[test]
fn greedy_ids_match_transformers() {
    for (backend, _) in backends() {
        for name in FIXTURES {
            let dir = fixture_dir(name);
            let reference = Reference::load(&dir).unwrap();
            let model = Model::load(&dir, backend.clone()).unwrap();
            let opts = GenerateOptions {
                max_tokens: reference.greedy_ids.len(),
                sampling: SamplingParams::default(),
                eos_token_ids: Vec::new(),
                stop_strings: Vec::new(),
                speculation: None,
                draft: None,
            };
            let out = generate(&model, &reference.input_ids, &opts, None, |_| {}).unwrap();
            // the cpu's ids are transformers' ids, so on wgpu this is also "equals the cpu's"
            assert_eq!(out.tokens, reference.greedy_ids, "fixture {name} on {}", backend.name());
        }
    }
}

/// The logits of every row asked for, argmaxed on the host by the sampler's rule.
fn host_argmax(logits: &ferrum_engine::Logits) -> Vec<u32> {
    (0..logits.rows()).map(|r| ferrum_engine::sampler::argmax(logits.row(r))).collect()
}

/// Greedy decoding the way it was before the argmax op: logits of the last
/// position read back every step, argmax on the host.
fn host_greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    host_decode(model, prompt, n, ferrum_engine::sampler::argmax)
}

/// `n` tokens after `prompt`, each picked by `pick` from the last position's
/// logits read back to the host.
fn host_decode(model: &Model, prompt: &[u32], n: usize, mut pick: impl FnMut(&[f32]) -> u32) -> Vec<u32> {
    use ferrum_engine::kv_cache::{BlockTable, PagedKv};
    use ferrum_engine::{LogitsWanted, SeqChunk};
    let mut kv = PagedKv::for_tokens(model.backend(), &model.config, prompt.len() + n, 4).unwrap();
    let mut table = BlockTable::default();
    table.reserve(&mut kv.pool, prompt.len() + n, 4).unwrap();
    let mut tokens = prompt.to_vec();
    let mut fed = 0;
    while tokens.len() < prompt.len() + n {
        let chunk = SeqChunk {
            tokens: &tokens[fed..],
            start_pos: fed,
            block_table: table.blocks(),
            logits: LogitsWanted::Last,
        };
        let logits = model.forward(&[chunk], &kv.cache).unwrap();
        fed = tokens.len();
        tokens.push(pick(logits.row(0)));
    }
    tokens.split_off(prompt.len())
}

/// Greedy ids picked on the device (the argmax op; only ids read back) are
/// the host sampler's, on every backend and fixture: for each row of a
/// batched step (two sequences, every position of one), and for a whole
/// greedy generation.
#[test]
fn greedy_on_the_device_matches_the_host_sampler() {
    use ferrum_engine::kv_cache::{BlockTable, PagedKv};
    use ferrum_engine::{LogitsWanted, SeqChunk};
    for (backend, _) in backends() {
        for name in FIXTURES {
            let dir = fixture_dir(name);
            let reference = Reference::load(&dir).unwrap();
            let model = Model::load(&dir, backend.clone()).unwrap();
            assert!(model.argmax_on_device(), "{}", backend.name());
            let ids = &reference.input_ids;
            let (a, b) = (&ids[..], &ids[2..7]);
            let mut kv = PagedKv::new(model.backend(), &model.config, 16, 4).unwrap();
            let (mut ta, mut tb) = (BlockTable::default(), BlockTable::default());
            ta.reserve(&mut kv.pool, a.len(), 4).unwrap();
            tb.reserve(&mut kv.pool, b.len(), 4).unwrap();
            let chunks = [
                SeqChunk { tokens: a, start_pos: 0, block_table: ta.blocks(), logits: LogitsWanted::All },
                SeqChunk { tokens: b, start_pos: 0, block_table: tb.blocks(), logits: LogitsWanted::Last },
            ];
            let host = host_argmax(&model.forward(&chunks, &kv.cache).unwrap());
            let device = model.forward_greedy(&chunks, &kv.cache).unwrap();
            assert_eq!(device.len(), a.len() + 1);
            assert_eq!(device, host, "fixture {name} on {}, rows of a batched step", backend.name());

            let n = reference.greedy_ids.len();
            let opts = GenerateOptions {
                max_tokens: n,
                sampling: SamplingParams::default(),
                eos_token_ids: Vec::new(),
                stop_strings: Vec::new(),
                speculation: None,
                draft: None,
            };
            let device = generate(&model, ids, &opts, None, |_| {}).unwrap().tokens;
            assert_eq!(device, host_greedy(&model, ids, n), "fixture {name} on {}, generation", backend.name());
            println!("fixture {name} {}: device greedy == host greedy ({n} tokens)", backend.name());
        }
    }
}

/// A decode step on wgpu records every op into one batch: one submit and one
/// read-back (the logits, or for greedy decoding the id alone). Its own
/// device, so other tests' work is not counted.
#[test]
fn a_wgpu_decode_step_is_one_submit_and_one_read_back() {
    use ferrum_backend_wgpu::{Options, WgpuBackend};
    use ferrum_engine::kv_cache::{BlockTable, PagedKv};
    use ferrum_engine::{LogitsWanted, SeqChunk};
    let wgpu = match WgpuBackend::open_with(Options::default()) {
        Ok(b) => Arc::new(b),
        Err(why) => return println!("wgpu absent: {why}"),
    };
    let dir = fixture_dir("llama");
    let ids = Reference::load(&dir).unwrap().input_ids;
    let model = Model::load(&dir, wgpu.clone()).unwrap();
    let mut kv = PagedKv::new(model.backend(), &model.config, 16, 4).unwrap();
    let mut table = BlockTable::default();
    table.reserve(&mut kv.pool, ids.len(), 4).unwrap();
    let n = ids.len() - 1; // prefill n - 1 tokens, then two decode steps; the second is counted
    let chunk = |start: usize, end: usize, logits| SeqChunk {
        tokens: &ids[start..end],
        start_pos: start,
        block_table: table.blocks(),
        logits,
    };
    model.forward(&[chunk(0, n - 1, LogitsWanted::None)], &kv.cache).unwrap();
    model.forward(&[chunk(n - 1, n, LogitsWanted::Last)], &kv.cache).unwrap();
    let before = wgpu.stats();
    let logits = model.forward(&[chunk(n, n + 1, LogitsWanted::Last)], &kv.cache).unwrap();
    let after = wgpu.stats();
    assert_eq!(logits.rows(), 1);
    let (submits, readbacks) = (after.submits - before.submits, after.readbacks - before.readbacks);
    let (dispatches, bind_groups) = (after.dispatches - before.dispatches, after.bind_groups - before.bind_groups);
    println!(
        "wgpu decode step ({} layers): {submits} submit, {readbacks} read-back, {dispatches} dispatches, \
         {bind_groups} new bind groups",
        model.config.num_layers
    );
    assert_eq!((submits, readbacks), (1, 1));
    assert_eq!(after.readback_bytes - before.readback_bytes, 4 * model.config.vocab_size as u64);
    // greedy: the same step ending in the argmax op brings back one u32
    let before = wgpu.stats();
    let ids = model.forward_greedy(&[chunk(n, n + 1, LogitsWanted::Last)], &kv.cache).unwrap();
    let after = wgpu.stats();
    assert_eq!(ids, [ferrum_engine::sampler::argmax(logits.row(0))]);
    let (submits, readbacks) = (after.submits - before.submits, after.readbacks - before.readbacks);
    assert_eq!((submits, readbacks, after.readback_bytes - before.readback_bytes), (1, 1, 4));
}

#[test]
fn a_batch_of_different_sequences_matches_each_run_alone() {
    // a dense model and a mixture of experts, whose tokens route by row
    for name in ["mistral", "mixtral", "qwen3-moe", "deepseek-v3", "deepseek-v32"] {
        batch_matches_each_run_alone(name);
    }
}

fn batch_matches_each_run_alone(name: &str) {
    use ferrum_engine::kv_cache::{BlockTable, PagedKv};
    use ferrum_engine::{LogitsWanted, SeqChunk};
    let dir = fixture_dir(name);
    let reference = Reference::load(&dir).unwrap();
    let model = Model::load(&dir, cpu()).unwrap();
    let ids = &reference.input_ids;
    let (a, b) = (&ids[..20], &ids[3..9]);
    // both sequences share one cache with interleaved blocks of 4
    let mut kv = PagedKv::new(model.backend(), &model.config, 16, 4).unwrap();
    let (mut ta, mut tb) = (BlockTable::default(), BlockTable::default());
    tb.reserve(&mut kv.pool, 1, 4).unwrap();
    ta.reserve(&mut kv.pool, a.len(), 4).unwrap();
    tb.reserve(&mut kv.pool, b.len(), 4).unwrap();
    // a: prompt in two chunks, the second batched with all of b
    let first = [SeqChunk { tokens: &a[..11], start_pos: 0, block_table: ta.blocks(), logits: LogitsWanted::None }];
    assert_eq!(model.forward(&first, &kv.cache).unwrap().rows(), 0);
    let both = [
        SeqChunk { tokens: &a[11..], start_pos: 11, block_table: ta.blocks(), logits: LogitsWanted::All },
        SeqChunk { tokens: b, start_pos: 0, block_table: tb.blocks(), logits: LogitsWanted::Last },
    ];
    let got = model.forward(&both, &kv.cache).unwrap();
    let alone_a = sequence_logits(&model, a, LogitsMode::Prefill).unwrap();
    let alone_b = sequence_logits(&model, b, LogitsMode::Prefill).unwrap();
    let want: Vec<f32> = alone_a.data[11 * alone_a.vocab..].iter().chain(alone_b.row(b.len() - 1)).copied().collect();
    let err = max_err_over_std(&got.data, &want);
    assert!(err < 1e-5, "{name}: batched vs alone: {err:.2e}");
}

/// Decode steps replayed from recordings (CUDA graphs; op lists on the cpu
/// reference) give the logits, greedy and sampled ids of steps run op by op, bit for
/// bit on the cpu: two sequences of different lengths decoding together past
/// block-table widths 2, 4 and 8 (re-recorded each time), then one alone,
/// then a new cache (the old recordings dropped).
#[test]
fn recorded_decode_steps_match_steps_run_op_by_op() {
    use ferrum_engine::kv_cache::{BlockTable, PagedKv};
    use ferrum_engine::{LogitsWanted, SeqChunk};
    let backends: Vec<Arc<dyn Backend>> =
        backends().into_iter().map(|(b, _)| b).chain(ferrum_backend_cuda::open().ok()).collect();
    for backend in backends {
        for name in ["llama", "gemma2", "qwen3", "qwen3-moe", "deepseek-v3", "deepseek-v32"] {
            let dir = fixture_dir(name);
            let recorded = Model::load(&dir, backend.clone()).unwrap();
            let plain = Model::load(&dir, backend.clone()).unwrap();
            plain.set_recording(false);
            let prompt = &Reference::load(&dir).unwrap().input_ids;
            let bs = 4;
            let run = |model: &Model, steps: usize| {
                let mut kv = PagedKv::new(model.backend(), &model.config, 32, bs).unwrap();
                let mut seqs = [prompt[..3].to_vec(), prompt[..6].to_vec()];
                let mut tables = [BlockTable::default(), BlockTable::default()];
                let mut out = Vec::new();
                for (s, t) in seqs.iter().zip(&mut tables) {
                    t.reserve(&mut kv.pool, s.len() + steps + 1, bs).unwrap();
                    let c = SeqChunk { tokens: s, start_pos: 0, block_table: t.blocks(), logits: LogitsWanted::None };
                    model.forward(&[c], &kv.cache).unwrap();
                }
                for step in 0..steps {
                    let alive = if step + 3 < steps { 2 } else { 1 }; // the batch shrinks at the end
                    let last: Vec<u32> = seqs.iter().map(|s| *s.last().unwrap()).collect();
                    let chunks: Vec<SeqChunk> = (0..alive)
                        .map(|i| SeqChunk {
                            tokens: std::slice::from_ref(&last[i]),
                            start_pos: seqs[i].len() - 1,
                            block_table: tables[i].blocks(),
                            logits: LogitsWanted::Last,
                        })
                        .collect();
                    // steps end in logits, greedy ids or sampled ids, in turn
                    let logits = match step % 3 {
                        0 => model.forward(&chunks, &kv.cache).unwrap().data,
                        1 => model.forward_greedy(&chunks, &kv.cache).unwrap().iter().map(|&i| i as f32).collect(),
                        _ => {
                            let picks: Vec<DevicePick> = (0..alive)
                                .map(|i| DevicePick {
                                    temperature: 0.9,
                                    uniform: ((step * 7 + i * 3) % 10) as f32 / 10.0,
                                })
                                .collect();
                            let ids = model.forward_picked(&chunks, &kv.cache, &picks).unwrap();
                            ids.iter().map(|&i| i as f32).collect()
                        }
                    };
                    let ids = if step % 3 == 0 {
                        let l = ferrum_engine::Logits { data: logits.clone(), vocab: model.config.vocab_size };
                        host_argmax(&l)
                    } else {
                        logits.iter().map(|&i| i as u32).collect()
                    };
                    for (s, id) in seqs.iter_mut().zip(ids) {
                        s.push(id);
                    }
                    out.push(logits);
                }
                out
            };
            // 3 + 18 tokens of 4-slot blocks: tables 2, 4 then 8 wide (padded)
            let (want, got) = (run(&plain, 20), run(&recorded, 20));
            assert_eq!(plain.recordings(), 0);
            let on = backend.name() != "wgpu"; // wgpu does not record
            assert_eq!(recorded.recordings() > 0, on, "{name} on {}", backend.name());
            for (step, (g, w)) in got.iter().zip(&want).enumerate() {
                let err = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                let bar = if backend.name().starts_with("cpu") { 0.0 } else { 1e-4 };
                assert!(err <= bar, "{name} on {}: step {step} differs by {err}", backend.name());
            }
            if on {
                let held = recorded.recordings();
                assert!(held >= 6, "{name}: {held} recordings for 2 batch sizes x 3 widths x logits/argmax/sample");
                run(&recorded, 2); // a new cache: the old recordings are dropped
                assert!(recorded.recordings() <= 2, "{name}: {} recordings", recorded.recordings());
            }
            println!("{name} {}: {} recorded decode steps == op by op", backend.name(), got.len());
        }
    }
}

/// Temperature sampling picked on the device (the `sample` op; only ids read
/// back) draws the host sampler's tokens for the same seed, on every backend
/// and fixture (where a backend lacks the op, the host runs the same rule).
#[test]
fn temperature_sampling_on_the_device_matches_the_host_sampler() {
    use ferrum_engine::sampler::Sampler;
    for (backend, _) in backends() {
        for name in FIXTURES {
            let dir = fixture_dir(name);
            let model = Model::load(&dir, backend.clone()).unwrap();
            let prompt = &Reference::load(&dir).unwrap().input_ids;
            let sampling = SamplingParams { temperature: 0.9, seed: 1234, ..Default::default() };
            assert!(sampling.is_device_pickable());
            let n = 12;
            let opts = GenerateOptions {
                max_tokens: n,
                sampling: sampling.clone(),
                eos_token_ids: Vec::new(),
                stop_strings: Vec::new(),
                speculation: None,
                draft: None,
            };
            let device = generate(&model, prompt, &opts, None, |_| {}).unwrap().tokens;
            // the host: logits back every step, Sampler::sample
            let mut sampler = Sampler::new(sampling, prompt);
            let host = host_decode(&model, prompt, n, |logits| sampler.sample(logits));
            assert_eq!(device, host, "fixture {name} on {}", backend.name());
            println!("fixture {name} {}: device sampling == host sampling ({n} tokens)", backend.name());
        }
    }
}

/// The parameter count `info` derives from the config is what the
/// checkpoint stores, for every fixture, dense or MoE.
#[test]
fn config_parameter_counts_equal_the_stored_ones() {
    for name in FIXTURES {
        let source = ferrum_engine::source::ModelSource::open(&fixture_dir(name)).unwrap();
        let stored = source.weights.stored();
        if stored.iter().any(|t| t.dtype == "U8" || t.name.ends_with("weight_scale_inv")) {
            continue; // packed codes: elements are not parameters
        }
        let stored: usize = stored.iter().map(|t| t.elements).sum();
        let counts = source.config.parameter_counts();
        assert_eq!(counts.total, stored, "{name}");
        assert_eq!(counts.active < counts.total, source.config.moe.is_some(), "{name}: {counts:?}");
    }
}

/// The memory check's weight size, from a dry run of the loader, is what
/// loading then takes, for every fixture and GGUF file, stored or quantized
/// on load, on each CPU backend (they hold GGUF blocks the same way).
#[test]
fn the_memory_estimate_is_what_loading_takes() {
    use ferrum_engine::memory::{MemoryNeed, Workload};
    use ferrum_engine::model::QuantPolicy;
    let gguf = std::fs::read_dir(fixture_dir("gguf")).unwrap().flatten().map(|e| e.path());
    let paths: Vec<_> = FIXTURES
        .iter()
        .map(|n| fixture_dir(n))
        .chain(gguf.filter(|p| p.extension().is_some_and(|e| e == "gguf")))
        .collect();
    let backends: [Arc<dyn Backend>; 2] = [cpu(), ferrum_backend_cpu::open(None).unwrap()];
    for path in paths {
        let source = ferrum_engine::source::ModelSource::open(&path).unwrap();
        for quant in [None, Some("nvfp4"), Some("int4:g32:asym"), Some("fp8:block")] {
            let policy = QuantPolicy::new(quant.map(|q| q.parse().unwrap()), &[]);
            for backend in &backends {
                let what = format!("{} {quant:?} on {}", path.display(), backend.name());
                let work = Workload::one_sequence(&source.config);
                let need = MemoryNeed::of(&source.config, &source.weights, &policy, backend.as_ref(), work);
                let model =
                    Model::from_store_quantized(source.config.clone(), &source.weights, backend.clone(), &policy);
                match (need, model) {
                    (Ok(need), Ok(model)) => assert_eq!(need.weights, model.weight_bytes(), "{what}"),
                    // a shape the format cannot take: the dry run says so as loading would
                    (Err(planned), Err(loaded)) => assert_eq!(planned.to_string(), loaded.to_string(), "{what}"),
                    (need, model) => {
                        panic!("{what}: the estimate gave {need:?}, loading {:?}", model.map(|m| m.weight_bytes()))
                    }
                }
            }
        }
    }
}

/// A KV cache of 16 or 8 bits on the CPU reference: each dense fixture's
/// logits stay within a bound set by the cache's rounding, against
/// transformers' f32 run. The keys and values are rounded to about 2^-11
/// relative (f16), 2^-8 (bf16) or 2^-4 (fp8 E4M3), and these tiny random
/// models carry that into their logits ~20x (measured worst: gemma, 1.3e-2,
/// 4.4e-2 and 1.2 of the logits' std); the bounds leave ~2.5x. Mixtures of
/// experts are left out: their fixtures' routers sit at near-ties (gaps ~2e-4
/// in meta.json) that any rounding may flip. The other backends run the
/// same caches op by op in the conformance table, and on wgpu whole models
/// too (backend-wgpu/tests/kv_cache_dtypes.rs).
#[test]
fn logits_with_smaller_kv_caches_stay_within_their_rounding() {
    use ferrum_engine::DType;
    use ferrum_engine::source::ModelSource;
    let bound = |d: DType| match d {
        DType::F16 => 3e-2,
        DType::BF16 => 0.12,
        _ => 3.0,
    };
    let mut failures = Vec::new();
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let reference = Reference::load(&dir).unwrap();
        let source = ModelSource::open(&dir).unwrap();
        if source.config.moe.is_some() {
            continue;
        }
        for dtype in [DType::F16, DType::BF16, DType::F8E4M3] {
            let mut config = source.config.clone();
            config.kv_cache_dtype = dtype;
            let model = Model::from_store(config, &source.weights, cpu()).unwrap();
            let got = sequence_logits(&model, &reference.input_ids, LogitsMode::Decode).unwrap();
            let err = max_err_over_std(&got.data, &reference.logits);
            println!("model {name} kv={dtype} cpu-ref: max_err/std={err:.2e} (bound {:.0e})", bound(dtype));
            if err > bound(dtype) {
                failures.push(format!("{name} kv={dtype}: {err:.2e} > {:.0e}", bound(dtype)));
            }
        }
    }
    assert!(failures.is_empty(), "over the bound: {failures:?}");
}
