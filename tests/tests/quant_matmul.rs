//! Quantized matmul equals dequantize-then-matmul, for every format, on every
//! backend that supports it; and quantizing a whole fixture model costs the
//! accuracy each format is expected to cost, no more.

use std::sync::Arc;

use ferrum_conformance::fixtures::{Reference, fixture_dir, max_err_over_std};
use ferrum_engine::logits::{LogitsMode, sequence_logits};
use ferrum_engine::model::QuantPolicy;
use ferrum_engine::ops::{Matmul, Op, OpKind};
use ferrum_engine::quant::{QuantFormat, QuantizedMatrix};
use ferrum_engine::sampler::Rng;
use ferrum_engine::source::ModelSource;
use ferrum_engine::{Backend, BackendExt, CpuBackend, DType, Model};

const FORMATS: [&str; 8] = ["nvfp4", "nvfp4:ct", "mxfp4", "fp8", "fp8:channel", "int8", "int4:g32", "int4:g64:asym"];

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| (rng.next_f64() as f32 - 0.5) * 2.0).collect()
}

#[test]
fn quantized_matmul_equals_dequantize_then_matmul() {
    let backend = CpuBackend::new();
    let (m, k, n) = (5, 256, 33);
    let x = random(m * k, 1);
    let w = random(n * k, 2);
    let xt = backend.upload_f32(&[m, k], &x).unwrap();
    for name in FORMATS {
        let format: QuantFormat = name.parse().unwrap();
        assert!(backend.supports(OpKind::Matmul, DType::Quant(format)));
        let packed = QuantizedMatrix::quantize(format, &w, n, k).unwrap();
        let wq = backend.upload_quantized(&packed).unwrap();
        let wd = backend.upload_f32(&[n, k], &packed.dequantize()).unwrap();
        let got = backend.read_f32(&backend.run(&Op::Matmul(Matmul), &[&xt, &wq]).unwrap()).unwrap();
        let want = backend.read_f32(&backend.run(&Op::Matmul(Matmul), &[&xt, &wd]).unwrap()).unwrap();
        // the same f32 rows go through the same dot products: identical
        assert_eq!(got, want, "{name}");
        println!("quant_matmul {name} cpu: OK (bit-identical to dequantize-then-matmul)");
    }
}

#[test]
fn a_quantized_fixture_stays_close_to_the_original() {
    let dir = fixture_dir("llama");
    let reference = Reference::load(&dir).unwrap();
    let source = ModelSource::open(&dir).unwrap();
    // max |err| / std of the logits each format may cost on this random model
    // (its 0.2-std weights make it sensitive): measured 0.35, 0.69, 2.6, 2.4,
    // limits ~1.5x that; and 8-bit formats must beat 4-bit ones
    let mut errors = Vec::new();
    for (name, limit) in [("int8", 0.5), ("fp8", 1.0), ("nvfp4", 4.0), ("int4:g32", 3.5)] {
        let format: QuantFormat = name.parse().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(CpuBackend::new());
        let model = Model::from_store_quantized(
            source.config.clone(),
            &source.weights,
            backend,
            &QuantPolicy::new(Some(format), &[]),
        )
        .unwrap();
        let got = sequence_logits(&model, &reference.input_ids, LogitsMode::Prefill).unwrap();
        let err = max_err_over_std(&got.data, &reference.logits);
        println!("quantized llama fixture {name}: max_err/std={err:.3}");
        assert!(err > 1e-6, "{name}: quantization changed nothing, so it was not applied");
        assert!(err < limit, "{name}: {err} over {limit}");
        errors.push(err);
    }
    assert!(errors[0] < errors[2] && errors[1] < errors[2] && errors[0] < errors[3], "{errors:?}");
}

#[test]
fn shapes_a_format_cannot_take_are_named_errors_at_load() {
    let dir = fixture_dir("llama"); // hidden 64: no whole 128-groups
    let source = ModelSource::open(&dir).unwrap();
    let backend: Arc<dyn Backend> = Arc::new(CpuBackend::new());
    let policy = QuantPolicy::new(Some("int4:g128".parse().unwrap()), &[]);
    let err = Model::from_store_quantized(source.config.clone(), &source.weights, backend, &policy).err().unwrap();
    assert!(err.to_string().contains("int4:g128"), "{err}");
}
