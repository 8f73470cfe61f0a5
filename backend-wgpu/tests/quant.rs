//! A whole quantized model on wgpu: the llama fixture with its linear weights
//! quantized to each format matches the cpu reference (which is exact
//! dequantize-then-matmul) in prefill and decode, with ordinary bindings and
//! with 2 KiB ones (codes and scales windowed by weight rows).

mod common;

use std::sync::Arc;

use ferrum_backend_wgpu::Options;
use ferrum_conformance::fixtures::{Reference, fixture_dir};
use ferrum_engine::logits::{LogitsMode, sequence_logits};
use ferrum_engine::model::QuantPolicy;
use ferrum_engine::quant::QuantFormat;
use ferrum_engine::source::ModelSource;
use ferrum_engine::{Backend, CpuBackend, Model};

fn logits(
    backend: Arc<dyn Backend>,
    source: &ModelSource,
    format: QuantFormat,
    ids: &[u32],
    mode: LogitsMode,
) -> Vec<f32> {
    let policy = QuantPolicy::new(Some(format), &[]);
    let model = Model::from_store_quantized(source.config.clone(), &source.weights, backend, &policy).unwrap();
    sequence_logits(&model, ids, mode).unwrap().data
}

#[test]
fn a_quantized_model_matches_the_cpu() {
    let tiny = Options { max_binding_bytes: Some(2048), binding_align: Some(256), ..Options::default() };
    let (Some(normal), Some(tiny)) = (common::backend(Options::default()), common::backend(tiny)) else { return };
    let (normal, tiny): (Arc<dyn Backend>, Arc<dyn Backend>) = (Arc::new(normal), Arc::new(tiny));
    let dir = fixture_dir("llama");
    let ids = Reference::load(&dir).unwrap().input_ids;
    let source = ModelSource::open(&dir).unwrap();
    let formats =
        ["nvfp4", "nvfp4:ct", "mxfp4", "fp8", "fp8:channel", "fp8:block16x32", "int8", "int4:g32", "int4:g32:asym"];
    for name in formats {
        let format: QuantFormat = name.parse().unwrap();
        for mode in [LogitsMode::Prefill, LogitsMode::Decode] {
            let want = logits(Arc::new(CpuBackend::new()), &source, format, &ids, mode);
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (which, b) in [("normal", &normal), ("2 KiB bindings", &tiny)] {
                let got = logits(b.clone(), &source, format, &ids, mode);
                assert_eq!(got.len(), want.len());
                let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
                println!("{name} {mode:?} {which}: max |wgpu - cpu| / max |logit| = {err:.1e}");
                // f32 arithmetic in another order over the same dequantized values
                assert!(err < 1e-5, "{name} {mode:?} {which}: {err:.2e}");
            }
        }
    }
}

/// A GGUF model with Q8_0 weights (tests/fixtures/gguf/llama-q8_0.gguf) runs
/// on its packed blocks, as on the cpu (the same weight bytes, no f32 copy),
/// and matches the cpu with ordinary bindings and with 2 KiB ones.
#[test]
fn a_gguf_model_runs_packed_and_matches_the_cpu() {
    let tiny = Options { max_binding_bytes: Some(2048), binding_align: Some(256), ..Options::default() };
    let (Some(normal), Some(tiny)) = (common::backend(Options::default()), common::backend(tiny)) else { return };
    let (normal, tiny): (Arc<dyn Backend>, Arc<dyn Backend>) = (Arc::new(normal), Arc::new(tiny));
    let path = fixture_dir("gguf").join("llama-q8_0.gguf");
    let ids = Reference::load(&fixture_dir("llama")).unwrap().input_ids;
    let cpu = Model::load(&path, Arc::new(CpuBackend::new())).unwrap();
    for mode in [LogitsMode::Prefill, LogitsMode::Decode] {
        let want = sequence_logits(&cpu, &ids, mode).unwrap().data;
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (which, b) in [("normal", &normal), ("2 KiB bindings", &tiny)] {
            let model = Model::load(&path, b.clone()).unwrap();
            assert_eq!(model.weight_bytes(), cpu.weight_bytes(), "{which}: weights not held packed");
            let got = sequence_logits(&model, &ids, mode).unwrap().data;
            assert_eq!(got.len(), want.len());
            let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            println!("llama-q8_0.gguf {mode:?} {which}: max |wgpu - cpu| / max |logit| = {err:.1e}");
            assert!(err < 1e-5, "llama-q8_0.gguf {mode:?} {which}: {err:.2e}");
        }
    }
}
