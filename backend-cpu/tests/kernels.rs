//! Every kernel path this CPU can run (portable, AVX2, AVX-512 VNNI; forced
//! one by one) against the CPU reference, on the shapes a model makes: one
//! row (decode), a few, and a prefill's many, over k with odd block counts.
//! The conformance suite runs its whole case table on the default path.

use ferrum_backend_cpu::{FastCpuBackend, Isa};
use ferrum_conformance::cases::{self, Case, GGML_FORMATS, QUANT_FORMATS, Rng};
use ferrum_conformance::harness::{Verdict, check};
use ferrum_engine::DType;
use ferrum_engine::ops::{Attention, RopeStyle};

fn backends() -> Vec<FastCpuBackend> {
    let list: Vec<_> = Isa::ALL.into_iter().filter(|i| i.available()).collect();
    println!("paths on this cpu: {list:?}");
    list.into_iter().flat_map(|isa| [1, 3].map(|t| FastCpuBackend::new(t, isa).unwrap())).collect()
}

fn model_shaped_cases() -> Vec<Case> {
    let mut rng = Rng::new(12);
    let mut list = Vec::new();
    for (m, k, n) in [(1, 576, 67), (2, 1536, 40), (5, 288, 33), (37, 576, 24)] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            list.push(cases::matmul(&mut rng, dtype, m, k, n, m == 2));
        }
        for f in QUANT_FORMATS.into_iter().chain(GGML_FORMATS) {
            let k = if matches!(f, ferrum_engine::quant::QuantFormat::Ggml(t) if t.block_size() == 256) {
                k.div_ceil(256) * 256
            } else {
                k
            };
            list.push(cases::quant_matmul(&mut rng, f, m, k, n, m == 5));
        }
    }
    // tables of whole groups of 8 rows: Q4_0, Q4_1 and Q8_0 are repacked on x86
    for f in GGML_FORMATS {
        list.push(cases::quant_gather_rows(&mut rng, f, 24, 256, &[0, 23, 9, 9, 16]));
    }
    // experts: a decode step (1 token), a prefill whose experts get many
    // rows; 24-row experts sit on 8-row groups, 20-row ones do not
    for dtype in
        [DType::F32, DType::F16].into_iter().chain(QUANT_FORMATS.into_iter().chain(GGML_FORMATS).map(DType::Quant))
    {
        let k = match dtype {
            DType::Quant(ferrum_engine::quant::QuantFormat::Ggml(t)) => 2 * t.block_size(),
            _ => 128,
        };
        list.push(cases::moe_matmul(&mut rng, dtype, [8, 24, k], [1, 2], false, [false, false]));
        list.push(cases::moe_matmul(&mut rng, dtype, [6, 20, k], [37, 3], true, [true, false]));
        list.push(cases::moe_matmul(&mut rng, dtype, [6, 20, k], [37, 3], true, [true, true]));
    }
    let att = |window| Attention { block_size: 4, scale: 0.125, softcap: None, window };
    list.push(cases::attention(&mut rng, att(None), [9, 3, 64], &[(37, 37)]));
    list.push(cases::attention(&mut rng, att(Some(5)), [4, 2, 16], &[(30, 1), (4, 3)]));
    list.push(cases::rope(&mut rng, RopeStyle::Neox, [3, 64, 32], 1.0, &(0..40).collect::<Vec<_>>()));
    list.push(cases::rms_norm(&mut rng, 40, 576, 1e-5, false));
    list.push(cases::glu(&mut rng, ferrum_engine::ops::Activation::Silu, &[40, 96]));
    list.push(cases::add(&mut rng, &[40, 96]));
    list
}

#[test]
fn every_path_matches_the_reference_on_model_shapes() {
    let cases = model_shaped_cases();
    let mut failures = Vec::new();
    for b in backends() {
        for case in &cases {
            let o = check(&b, case);
            if !matches!(o.verdict, Verdict::Ok { .. }) {
                failures.push(format!("{b:?}: {}", o.line()));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn an_unavailable_or_unknown_path_is_an_error() {
    assert!(Isa::named("sse9").is_err());
    for isa in Isa::ALL.into_iter().filter(|i| !i.available()) {
        assert!(FastCpuBackend::new(1, isa).is_err(), "{isa:?}");
    }
    assert!(FastCpuBackend::new(0, Isa::Portable).is_err());
}
