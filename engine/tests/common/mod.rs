//! What the serving tests share: fixtures, requests, and running them.
#![allow(dead_code)] // each test file uses its own share

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferrum_engine::generate::{FinishReason, GenerateOptions, generate};
use ferrum_engine::sampler::SamplingParams;
use ferrum_engine::serving::{EngineHandle, Event, GenerationRequest};
use ferrum_engine::{Backend, CpuBackend, Model};

pub fn fixture_named(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

pub fn model_of(name: &str) -> Model {
    let backend: Arc<dyn Backend> = Arc::new(CpuBackend::new());
    Model::load(&fixture_named(name), backend).unwrap()
}

pub fn prompt(i: u32, len: usize) -> Vec<u32> {
    (0..len as u32).map(|j| (i * 37 + j * 11) % 380 + 4).collect()
}

pub fn request(prompt: Vec<u32>, max_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        prompt,
        sampling: SamplingParams::default(),
        max_tokens,
        stop_strings: Vec::new(),
        stop_token_ids: Vec::new(),
        logprobs: None,
        grammar: None,
        keep_special_tokens: false,
    }
}

pub fn alone(model: &Model, prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let opts = GenerateOptions {
        max_tokens,
        sampling: SamplingParams::default(),
        eos_token_ids: Vec::new(),
        stop_strings: Vec::new(),
        speculation: None,
        draft: None,
    };
    generate(model, prompt, &opts, None, |_| {}).unwrap().tokens
}

/// A request's tokens until it finishes, or the error it ended with.
pub fn outcome(mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Result<(Vec<u32>, FinishReason), String> {
    let mut tokens = Vec::new();
    loop {
        match rx.blocking_recv() {
            Some(Event::Token { token, .. }) => tokens.push(token),
            Some(Event::Finished { reason, .. }) => return Ok((tokens, reason)),
            Some(Event::Error(e)) => return Err(e),
            None => return Err("the engine dropped the request".into()),
        }
    }
}

/// A request's tokens until it finishes; an error fails the test.
pub fn collect(rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> (Vec<u32>, FinishReason) {
    outcome(rx).unwrap_or_else(|e| panic!("engine error: {e}"))
}

/// Submits the prompts together (so they meet in the engine however the
/// threads are scheduled) and collects each one's tokens.
pub fn run_all(engine: &EngineHandle, prompts: &[Vec<u32>], max_tokens: usize) -> Vec<Vec<u32>> {
    let requests = prompts.iter().map(|p| request(p.clone(), max_tokens)).collect();
    let receivers = engine.submit_all(requests).unwrap();
    receivers.into_iter().map(|(_, rx)| collect(rx).0).collect()
}

/// Waits until no sequence runs and no KV block is in use.
pub fn wait_for_idle(engine: &EngineHandle) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.metrics.kv_blocks_used.load(Ordering::Relaxed) != 0
        || engine.metrics.running.load(Ordering::Relaxed) != 0
    {
        assert!(Instant::now() < deadline, "blocks never came back");
        std::thread::sleep(Duration::from_millis(5));
    }
}
