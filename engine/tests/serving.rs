//! The serving engine against single-sequence generation: continuous
//! batching, chunked prefill, preemption and prefix caching must not change
//! a single greedy token.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{alone, collect, fixture_named, model_of, prompt, request, run_all, wait_for_idle};
use ferrum_engine::generate::{FinishReason, GenerateOptions, generate};
use ferrum_engine::ops::{Op, OpKind};
use ferrum_engine::sampler::SamplingParams;
use ferrum_engine::serving::{EngineConfig, GenerationRequest, SubmitError, spawn};
use ferrum_engine::{Backend, CpuBackend, DType, Model, Tensor};

fn fixture() -> std::path::PathBuf {
    fixture_named("llama-notok")
}

fn model() -> Model {
    model_of("llama-notok")
}

/// The batching tests run a dense model, a mixture of experts, latent
/// attention (whose prefix cache holds latents), V3.2's sparse attention and
/// NVFP4 experts each with its own tensor scale.
const BATCHED: [&str; 5] = ["llama-notok", "qwen3-moe", "deepseek-v3", "deepseek-v32", "deepseek-v3-nvfp4"];

#[test]
fn concurrent_requests_match_each_alone() {
    for name in BATCHED {
        let reference = model_of(name);
        let prompts: Vec<Vec<u32>> = (0..12).map(|i| prompt(i, 5 + 7 * i as usize)).collect();
        let want: Vec<Vec<u32>> = prompts.iter().map(|p| alone(&reference, p, 10)).collect();
        // small batches force chunked prefill mixed with decoding
        let config = EngineConfig { max_batch_tokens: 24, block_size: 4, num_blocks: 256, ..Default::default() };
        let engine = spawn(model_of(name), None, config).unwrap();
        assert_eq!(run_all(&engine, &prompts, 10), want, "{name}");
        wait_for_idle(&engine);
    }
}

#[test]
fn preemption_by_recompute_keeps_outputs_exact() {
    for name in BATCHED {
        let reference = model_of(name);
        let prompts: Vec<Vec<u32>> = (0..6).map(|i| prompt(i + 20, 30)).collect();
        let want: Vec<Vec<u32>> = prompts.iter().map(|p| alone(&reference, p, 20)).collect();
        // 6 x 50 tokens need 6 x 13 blocks of 4; 24 blocks force preemption
        let config = EngineConfig { block_size: 4, num_blocks: 24, max_batch_tokens: 64, ..Default::default() };
        let engine = spawn(model_of(name), None, config).unwrap();
        assert_eq!(run_all(&engine, &prompts, 20), want, "{name}");
        assert!(engine.metrics.preemptions.load(Ordering::Relaxed) > 0, "the cache was meant to run out");
        wait_for_idle(&engine);
    }
}

#[test]
fn a_shared_prefix_is_served_from_the_cache() {
    for name in BATCHED {
        let reference = model_of(name);
        let shared = prompt(3, 40);
        let prompts: Vec<Vec<u32>> =
            (0..3).map(|i| shared.iter().copied().chain(prompt(50 + i, 5)).collect()).collect();
        let want: Vec<Vec<u32>> = prompts.iter().map(|p| alone(&reference, p, 8)).collect();
        let engine = spawn(model_of(name), None, EngineConfig { block_size: 8, ..Default::default() }).unwrap();
        let first = run_all(&engine, &prompts[..1], 8);
        let rest = run_all(&engine, &prompts[1..], 8);
        assert_eq!([first, rest].concat(), want, "{name}");
        let hits = engine.metrics.prefix_cache_hit_blocks.load(Ordering::Relaxed);
        assert!(hits >= 2 * 5, "40 shared tokens = 5 blocks of 8, reused twice; got {hits}");
    }
}

#[test]
fn dropped_receivers_free_their_blocks_and_the_engine_goes_on() {
    let engine = spawn(model(), None, EngineConfig { block_size: 4, ..Default::default() }).unwrap();
    for i in 0..4 {
        let (_, rx) = engine.submit(request(prompt(i, 20), 200)).unwrap();
        drop(rx); // the client went away
    }
    wait_for_idle(&engine);
    let reference = model();
    assert_eq!(run_all(&engine, &[prompt(9, 6)], 5), vec![alone(&reference, &prompt(9, 6), 5)]);
    assert!(engine.metrics.requests_aborted.load(Ordering::Relaxed) >= 1);
}

#[test]
fn bad_and_excess_requests_are_refused() {
    let config = EngineConfig { max_queue: 2, max_running: 1, ..Default::default() };
    let engine = spawn(model(), None, config).unwrap();
    let too_long = request(prompt(0, 250), 10);
    assert!(matches!(engine.submit(too_long), Err(SubmitError::Invalid(m)) if m.contains("context")));
    assert!(matches!(engine.submit(request(vec![], 5)), Err(SubmitError::Invalid(_))));
    assert!(matches!(engine.submit(request(vec![1, 99999], 5)), Err(SubmitError::Invalid(_))));
    assert!(matches!(engine.submit(request(vec![1], 0)), Err(SubmitError::Invalid(_))));
    // flood: some are refused with QueueFull, every accepted one completes
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..20 {
        match engine.submit(request(prompt(i, 10), 30)) {
            Ok((_, rx)) => accepted.push(rx),
            Err(SubmitError::QueueFull) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(refused > 0, "the queue of 2 must overflow");
    for rx in accepted {
        assert_eq!(collect(rx).1, FinishReason::Length);
    }
}

/// The cpu reference, counting the argmax ops it runs: which path a step took.
#[derive(Default)]
struct CountingArgmax {
    cpu: CpuBackend,
    argmaxes: AtomicUsize,
}

impl Backend for CountingArgmax {
    fn name(&self) -> &str {
        self.cpu.name()
    }
    fn device_description(&self) -> String {
        self.cpu.device_description()
    }
    fn supports(&self, op: OpKind, dtype: DType) -> bool {
        self.cpu.supports(op, dtype)
    }
    fn alloc(&self, shape: &[usize], dtype: DType) -> ferrum_engine::Result<Tensor> {
        self.cpu.alloc(shape, dtype)
    }
    fn upload(&self, shape: &[usize], dtype: DType, bytes: &[u8]) -> ferrum_engine::Result<Tensor> {
        self.cpu.upload(shape, dtype, bytes)
    }
    fn write(&self, dst: &Tensor, bytes: &[u8]) -> ferrum_engine::Result<()> {
        self.cpu.write(dst, bytes)
    }
    fn read(&self, src: &Tensor) -> ferrum_engine::Result<Vec<u8>> {
        self.cpu.read(src)
    }
    fn execute(&self, op: &Op, inputs: &[&Tensor], out: &Tensor) -> ferrum_engine::Result<()> {
        if let Op::Argmax(_) = op {
            self.argmaxes.fetch_add(1, Ordering::SeqCst);
        }
        self.cpu.execute(op, inputs, out)
    }
    fn sync(&self) -> ferrum_engine::Result<()> {
        self.cpu.sync()
    }
}

fn counting_model() -> (Model, Arc<CountingArgmax>) {
    let backend = Arc::new(CountingArgmax::default());
    (Model::load(&fixture(), backend.clone()).unwrap(), backend)
}

/// Greedy requests without logprobs are sampled on the device (one argmax
/// per step); a request that wants logprobs or a penalty takes the logits
/// path for the whole step. The tokens are the same either way.
#[test]
fn plain_greedy_steps_pick_on_the_device_with_the_host_paths_tokens() {
    let prompts: Vec<Vec<u32>> = (0..5).map(|i| prompt(i + 40, 6 + 9 * i as usize)).collect();
    let config = EngineConfig { max_batch_tokens: 24, block_size: 4, num_blocks: 256, ..Default::default() };
    let (model, counter) = counting_model();
    let engine = spawn(model, None, config).unwrap();
    let submit_all = |logprobs: &dyn Fn(usize) -> Option<usize>| -> Vec<Vec<u32>> {
        let receivers: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                engine.submit(GenerationRequest { logprobs: logprobs(i), ..request(p.clone(), 12) }).unwrap().1
            })
            .collect();
        receivers.into_iter().map(|rx| collect(rx).0).collect()
    };
    // every request wants logprobs: the host sampler, no argmax at all
    let host = submit_all(&|_| Some(0));
    assert_eq!(counter.argmaxes.load(Ordering::SeqCst), 0, "logprobs need the logits");
    // none does: every step with a token to pick runs one argmax
    let device = submit_all(&|_| None);
    let steps = counter.argmaxes.load(Ordering::SeqCst);
    assert!(steps >= 12, "each of the 12 tokens of the longest request came from a device step; got {steps}");
    assert_eq!(device, host);
    // mixed: steps holding a logprobs request read logits, the rest do not
    assert_eq!(submit_all(&|i| (i % 2 == 0).then_some(2)), host);
    // a penalty needs the logits as well
    let before = counter.argmaxes.load(Ordering::SeqCst);
    let sampling = SamplingParams { repetition_penalty: 1.3, ..SamplingParams::default() };
    let rx = engine.submit(GenerationRequest { sampling, ..request(prompts[0].clone(), 12) }).unwrap().1;
    assert_eq!(collect(rx).0.len(), 12);
    assert_eq!(counter.argmaxes.load(Ordering::SeqCst), before, "a penalized request sampled on the device");
    wait_for_idle(&engine);
}

/// `generate` picks plain greedy tokens on the device, one argmax per token,
/// and anything else on the host; with the host's tokens.
#[test]
fn generate_picks_plain_greedy_tokens_on_the_device() {
    let (model, counter) = counting_model();
    let p = prompt(7, 9);
    let device = alone(&model, &p, 15);
    assert_eq!(counter.argmaxes.load(Ordering::SeqCst), 15);
    // top_k is ignored at temperature 0: still plain greedy
    let opts = |sampling| GenerateOptions {
        max_tokens: 15,
        sampling,
        eos_token_ids: vec![],
        stop_strings: vec![],
        speculation: None,
        draft: None,
    };
    let top_k = SamplingParams { top_k: 3, ..SamplingParams::default() };
    assert_eq!(generate(&model, &p, &opts(top_k), None, |_| {}).unwrap().tokens, device);
    assert_eq!(counter.argmaxes.load(Ordering::SeqCst), 30);
    // a repetition penalty of 1 + epsilon changes nothing here but the path
    let penalty = SamplingParams { repetition_penalty: 1.0 + f32::EPSILON, ..SamplingParams::default() };
    let host = generate(&model, &p, &opts(penalty), None, |_| {}).unwrap().tokens;
    assert_eq!(counter.argmaxes.load(Ordering::SeqCst), 30, "a penalty needs the logits");
    assert_eq!(host, device);
}
