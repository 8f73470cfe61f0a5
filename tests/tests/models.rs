//! Whole-model conformance: every fixture's logits match transformers in
//! prefill and decode mode, and greedy generation reproduces its ids.

use std::sync::Arc;

use ferrum_conformance::fixtures::{FIXTURES, Reference, fixture_dir, max_err_over_std};
use ferrum_engine::generate::{GenerateOptions, generate};
use ferrum_engine::logits::{LogitsMode, sequence_logits};
use ferrum_engine::sampler::SamplingParams;
use ferrum_engine::{Backend, CpuBackend, Model};

/// f32 end to end; transformers' float32 and ours differ only in summation
/// order and libm, about 1e-6 of the logits' spread.
const TOLERANCE_F32: f64 = 1e-4;

fn cpu() -> Arc<dyn Backend> {
    Arc::new(CpuBackend::new())
}

#[test]
fn logits_match_transformers_in_prefill_and_decode() {
    let mut failures = Vec::new();
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let reference = Reference::load(&dir).unwrap();
        let model = Model::load(&dir, cpu()).unwrap();
        for mode in [LogitsMode::Prefill, LogitsMode::Decode] {
            let got = sequence_logits(&model, &reference.input_ids, mode).unwrap();
            let err = max_err_over_std(&got.data, &reference.logits);
            let verdict = if err <= TOLERANCE_F32 { "OK" } else { "FAIL" };
            println!("model {name} mode={mode:?} cpu: {verdict} max_err/std={err:.2e}");
            if err > TOLERANCE_F32 {
                failures.push(format!("{name} {mode:?}: {err:.2e}"));
            }
        }
    }
    assert!(failures.is_empty(), "over tolerance {TOLERANCE_F32}: {failures:?}");
}

#[test]
fn greedy_ids_match_transformers() {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let reference = Reference::load(&dir).unwrap();
        let model = Model::load(&dir, cpu()).unwrap();
        let opts = GenerateOptions {
            max_tokens: reference.greedy_ids.len(),
            sampling: SamplingParams::default(),
            eos_token_ids: Vec::new(),
            stop_strings: Vec::new(),
        };
        let out = generate(&model, &reference.input_ids, &opts, None, |_| {}).unwrap();
        assert_eq!(out.tokens, reference.greedy_ids, "fixture {name}");
    }
}

#[test]
fn a_batch_of_different_sequences_matches_each_run_alone() {
    use ferrum_engine::kv_cache::{BlockTable, PagedKv};
    use ferrum_engine::{LogitsWanted, SeqChunk};
    let dir = fixture_dir("mistral");
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
    assert!(err < 1e-5, "batched vs alone: {err:.2e}");
}
