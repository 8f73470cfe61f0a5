//! Tensors larger than one binding: with the binding limit lowered to a few
//! KiB (and offsets aligned to 256 bytes as on most GPUs), every op whose big
//! operands are windowed must still match the cpu reference, and a whole
//! model whose embedding table and lm_head span many windows must too.

mod common;

use std::sync::Arc;

use ferrum_backend_wgpu::Options;
use ferrum_conformance::cases::all_cases;
use ferrum_conformance::fixtures::{Reference, fixture_dir, max_err_over_std};
use ferrum_conformance::harness::{Verdict, check};
use ferrum_engine::logits::{LogitsMode, sequence_logits};
use ferrum_engine::ops::OpKind;
use ferrum_engine::{Backend, Model};

fn small_bindings(max_binding_bytes: u64) -> Options {
    Options { max_binding_bytes: Some(max_binding_bytes), binding_align: Some(256), ..Options::default() }
}

/// At 2 KiB per binding every case's big operands are split (a row of 4099
/// f32 is refused cleanly instead); what is bound whole (norm weights, ids,
/// block tables) and does not fit is an error that says so, never a wrong
/// answer.
#[test]
fn cases_match_the_cpu_with_tiny_bindings() {
    let Some(b) = common::backend(small_bindings(2048)) else { return };
    let (mut passed, mut refused, mut failures) = (0, Vec::new(), Vec::new());
    for case in all_cases() {
        let o = check(&b, &case);
        println!("{}", o.line());
        match &o.verdict {
            Verdict::Ok { .. } => passed += 1,
            Verdict::Fail { nmse: None, why } if why.contains("binding") => refused.push((case.kind(), why.clone())),
            _ => failures.push(o.line()),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // only ops with operands bound whole, or rows wider than a binding (e.g.
    // the 512 f32 a row of the K-quant gather_rows cases write), may refuse
    for (kind, why) in &refused {
        let row_wide = matches!(kind, OpKind::RmsNorm | OpKind::Matmul | OpKind::Argmax | OpKind::Sample)
            || why.contains("does not fit a binding");
        assert!(row_wide, "{} refused: {why}", kind.name());
    }
    assert!(passed >= 34, "only {passed} cases ran with tiny bindings");
    println!("{passed} passed, {} refused cleanly", refused.len());
}

/// Each windowed op, on shapes chosen to need several windows of every
/// windowed operand (1 KiB bindings) and to fit what is bound whole.
#[test]
fn windowed_paths_of_every_op() {
    use ferrum_conformance::cases::{self, Rng};
    use ferrum_engine::DType;
    use ferrum_engine::ops::{Activation, Attention, MoeRoute, RopeStyle, RouterScoring};
    let Some(b) = common::backend(small_bindings(1024)) else { return };
    let mut rng = Rng::new(99);
    let mut list = Vec::new();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        // table rows of 516 (f32) or 258 bytes: 1 or 3 rows per window
        list.push(cases::gather_rows(&mut rng, dtype, 37, 129, &[0, 36, 5, 5, 17, 1, 36, 2, 30]));
        // x, w and out all in several windows; m > 8 takes the tiled kernel
        list.push(cases::matmul(&mut rng, dtype, 11, 129, 33, true));
        list.push(cases::matmul(&mut rng, dtype, 3, 129, 33, false));
    }
    list.push(cases::rms_norm(&mut rng, 9, 100, 1e-6, true));
    list.push(cases::rope(&mut rng, RopeStyle::Neox, [2, 32, 16], 1.0, &[0, 3, 9, 100, 7, 5, 6]));
    list.push(cases::kv_store(&mut rng, DType::F32, 4, 2, 16, &[(9, 9), (5, 2)]));
    // caches of 28 slots x 128 bytes in 4 windows, merged flash-decoding style
    let att = Attention { block_size: 4, scale: 0.25, softcap: Some(3.0), window: None };
    list.push(cases::attention(&mut rng, att, [4, 2, 16], &[(9, 9), (5, 2)]));
    let att = Attention { block_size: 3, scale: 0.3, softcap: None, window: Some(5) };
    list.push(cases::attention(&mut rng, att.clone(), [2, 1, 32], &[(20, 4), (1, 1), (7, 7)]));
    // sinks over the same windowed caches: counted once in the merged softmax
    list.push(cases::attention_with(&mut rng, att, [2, 1, 32], &[(20, 4), (1, 1), (7, 7)], true, DType::F32));
    let att = Attention { block_size: 4, scale: 0.25, softcap: Some(3.0), window: None };
    list.push(cases::attention_with(&mut rng, att, [4, 2, 16], &[(9, 9), (5, 2)], true, DType::F32));
    // caches of 16 and 8 bits: packed words, rows of 64..256 bytes in 3..10 windows
    for dtype in [DType::F16, DType::BF16, DType::F8E4M3] {
        list.push(cases::kv_store(&mut rng, dtype, 4, 4, 16, &[(9, 9), (5, 2)]));
        let att = Attention { block_size: 4, scale: 0.25, softcap: Some(3.0), window: None };
        list.push(cases::attention_with(&mut rng, att, [4, 2, 32], &[(9, 9), (5, 2)], dtype == DType::BF16, dtype));
    }
    list.push(cases::glu(&mut rng, Activation::Silu, &[3, 300]));
    list.push(cases::add(&mut rng, &[1000]));
    list.push(cases::scale(&mut rng, 3.0, &[1000]));
    list.push(cases::softcap(&mut rng, 2.0, 8.0, &[1000]));
    // x rows of 84 bytes (12 a window), 300 ids of u32 in 2 windows
    list.push(cases::argmax(&mut rng, 300, 21));
    // x rows of 84 bytes (9 a window), 300 temperatures, uniforms and ids in 2 windows each; greedy rows among them
    let temperatures: Vec<f32> = (0..300).map(|r| [0.7, 1.0, 0.0, 1.5, 0.3][r % 5]).collect();
    list.push(cases::sample(&mut rng, &temperatures, 21));
    // router logits of 32 bytes a row, 24 tokens a window
    let route = MoeRoute { top_k: 3, scoring: RouterScoring::Sigmoid, renormalize: true, groups: None, scale: 1.5 };
    list.push(cases::moe_route(&mut rng, route, 300, 8, true));
    // stacks of 3 or 5 rows of 64 bytes (f32): 4 or 2 experts a window; x in
    // windows of 6 tokens (2 rows each) or 12 (1 row each)
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        list.push(cases::moe_matmul(&mut rng, dtype, [10, 3, 16], [13, 2], true, [true, true]));
        list.push(cases::moe_matmul(&mut rng, dtype, [7, 5, 16], [30, 3], false, [false, false]));
    }
    // y rows of 132 bytes: 2 tokens of 2 choices a window
    list.push(cases::moe_combine(&mut rng, 40, 2, 33));
    let run = |b: &dyn Backend, cases: &[ferrum_conformance::cases::Case]| -> Vec<String> {
        let outcomes = cases.iter().map(|c| check(b, c)).inspect(|o| println!("{}", o.line()));
        outcomes.filter(|o| !o.passed()).map(|o| o.line()).collect()
    };
    let mut failures = run(&b, &list);
    assert!(b.stats().dispatches > list.len() as u64 * 3, "windows were expected to split the work");
    // at 2 KiB the caches (1.75 KiB) are bound whole and q (2.75 KiB) is windowed
    let Some(b) = common::backend(small_bindings(2048)) else { return };
    let att = Attention { block_size: 4, scale: 0.25, softcap: Some(3.0), window: Some(6) };
    let sinked = cases::attention_with(&mut rng, att.clone(), [4, 1, 16], &[(9, 9), (5, 2)], true, DType::F32);
    failures.extend(run(&b, &[cases::attention(&mut rng, att, [4, 1, 16], &[(9, 9), (5, 2)]), sinked]));
    // K-quant super-blocks of 256: x and out rows of 1 KiB (one a window);
    // codes rows of 84..212 bytes, several windows, most starting mid-binding
    let mut kquants = Vec::new();
    for format in cases::GGML_FORMATS.into_iter().filter(|f| f.to_string().ends_with("_k")) {
        kquants.push(cases::quant_matmul(&mut rng, format, 3, 256, 33, true));
        kquants.push(cases::quant_matmul(&mut rng, format, 11, 256, 17, false));
        kquants.push(cases::quant_gather_rows(&mut rng, format, 37, 256, &[0, 36, 5, 5, 17, 1, 36, 2, 30]));
    }
    assert_eq!(kquants.len(), 15);
    // an expert of 3 rows of 144 bytes (Q4_K), 4 experts a window; x rows of 1 KiB, one token a window
    let q4_k = cases::GGML_FORMATS.into_iter().find(|f| f.to_string() == "q4_k").unwrap();
    kquants.push(cases::moe_matmul(&mut rng, DType::Quant(q4_k), [10, 3, 256], [5, 2], false, [true, false]));
    failures.extend(run(&b, &kquants));
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The llama fixture with 2 KiB bindings: its embedding table and lm_head
/// ([384, 64] f32), activations and KV caches (128 bytes a slot) all span
/// several windows; a logits row (1.5 KiB) just fits.
#[test]
fn a_model_matches_with_tiny_bindings() {
    let (Some(tiny), Some(normal)) = (common::backend(small_bindings(2048)), common::backend(Options::default()))
    else {
        return;
    };
    let (tiny, normal) = (Arc::new(tiny), Arc::new(normal));
    let dir = fixture_dir("llama");
    let reference = Reference::load(&dir).unwrap();
    for mode in [LogitsMode::Prefill, LogitsMode::Decode] {
        for b in [&tiny, &normal] {
            let model = Model::load(&dir, b.clone() as Arc<dyn Backend>).unwrap();
            let got = sequence_logits(&model, &reference.input_ids, mode).unwrap();
            let err = max_err_over_std(&got.data, &reference.logits);
            assert!(err < 2e-3, "{mode:?}: {err:.2e}");
        }
        let (t, n) = (tiny.stats().dispatches, normal.stats().dispatches);
        println!("llama {mode:?}: 2 KiB bindings took {t} dispatches, unlimited {n}");
        assert!(t > 2 * n, "the tiny bindings should have split most ops");
    }
}
