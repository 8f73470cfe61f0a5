//! `ferrum bench`: throughput and latency, either in-process (the serving
//! engine without HTTP) or against any OpenAI-compatible URL (Ferrum, vLLM,
//! llama-server), with the same workload and the same report.

mod http;
mod stats;
mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use ferrum_engine::kv_cache::KvCache;
use ferrum_engine::sampler::{Rng, SamplingParams};
use ferrum_engine::serving::{EngineConfig, EngineHandle, Event, GenerationRequest, SubmitError, spawn};

use crate::model_args::{ModelArgs, SpeculationArgs};
use stats::{RequestRecord, Summary};
use workload::{LenRange, Workload, parse_range};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Benchmark this OpenAI-compatible server instead of an in-process engine.
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long)]
    pub api_key: Option<String>,
    /// The model id to send to --url (default: the server's first model).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Prompt length in tokens: N or LOW:HIGH.
    #[arg(long, default_value = "128", value_parser = parse_range)]
    pub input_len: LenRange,
    /// Tokens to generate: N or LOW:HIGH (EOS is ignored).
    #[arg(long, default_value = "64", value_parser = parse_range)]
    pub output_len: LenRange,
    #[arg(long, default_value_t = 32)]
    pub num_prompts: usize,
    /// Requests in flight at once.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Poisson arrivals at this many requests per second (instead of all at once).
    #[arg(long)]
    pub request_rate: Option<f64>,
    /// Replay prompts from a JSONL file ({"prompt_ids": [...]} or {"prompt": "..."}, optional "max_tokens").
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Vocabulary size of the --url server's model, for synthetic prompt ids.
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// KV cache for the in-process engine, in MiB.
    #[arg(long, default_value_t = 512)]
    pub kv_cache_mib: usize,
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// In-process: speculative decoding (`--speculate K`, `--ngram-max N`).
    #[command(flatten)]
    pub speculation: SpeculationArgs,
}

/// Sends one request and measures it.
type Sender = Arc<dyn Fn(&Workload) -> RequestRecord + Send + Sync>;

/// The target's counters now (in-process: the engine's; a URL: its `/metrics`).
type Counters = Box<dyn Fn() -> Vec<(String, f64)>>;

fn parse_counters(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// What speculative decoding did during the run.
struct Speculated {
    guessed: f64,
    kept: f64,
    steps: f64,
}

impl Speculated {
    /// From the counters before and after; `None` when nothing was guessed.
    fn between(before: &[(String, f64)], after: &[(String, f64)]) -> Option<Self> {
        let delta = |name: &str| {
            let get = |c: &[(String, f64)]| c.iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| *v);
            get(after) - get(before)
        };
        let s = Speculated {
            guessed: delta("ferrum_spec_guessed_tokens_total"),
            kept: delta("ferrum_spec_accepted_tokens_total"),
            steps: delta("ferrum_spec_steps_total"),
        };
        (s.guessed > 0.0).then_some(s)
    }

    fn acceptance(&self) -> f64 {
        self.kept / self.guessed
    }

    /// Tokens a verifying step yields: the kept guesses and one more.
    fn tokens_per_step(&self) -> f64 {
        1.0 + self.kept / self.steps.max(1.0)
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.request_rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--request-rate must be positive");
    }
    let (sender, vocab, label, tokenizer, counters): (Sender, usize, String, _, Counters) = match &args.url {
        Some(url) => {
            let target = http::Target::connect(url, args.api_key.clone(), args.served_model_name.clone())?;
            let label = format!("{} at {url}", target.model);
            // token ids below 1000 exist in every real vocabulary
            let vocab = args.vocab_size.or(target.vocab_size).unwrap_or(1000);
            let target = Arc::new(target);
            let scrape = target.clone();
            let counters: Counters = Box::new(move || scrape.counters());
            (Arc::new(move |w: &Workload| target.send(w)), vocab, label, None, counters)
        }
        None => {
            let loaded = args.model.load()?;
            let config = loaded.model.config.clone();
            let num_blocks = (args.kv_cache_mib << 20) / KvCache::bytes_per_block(&config, 16).max(1);
            let engine_config = EngineConfig {
                num_blocks: num_blocks.max(1),
                block_size: 16,
                max_batch_tokens: args.max_batch_tokens,
                max_running: 256,
                max_queue: args.num_prompts.max(1),
                speculation: args.speculation.speculation()?,
                draft: args.speculation.drafter(&args.model, &loaded.model)?,
            };
            let label = format!("in-process {} on {}", loaded.source.path.display(), loaded.model.backend().name());
            let tokenizer = loaded.source.tokenizer.clone();
            let engine = spawn(loaded.model, None, engine_config)?;
            let metrics = engine.metrics.clone();
            let counters: Counters = Box::new(move || parse_counters(&metrics.render()));
            (Arc::new(move |w: &Workload| in_process(&engine, w)), config.vocab_size, label, tokenizer, counters)
        }
    };
    let workloads = match &args.dataset {
        Some(path) => {
            let tokenize = tokenizer.as_ref().map(|t| move |s: &str| Ok(t.encode(s, true)?));
            let tokenize_ref = tokenize.as_ref().map(|f| f as &dyn Fn(&str) -> Result<Vec<u32>>);
            workload::dataset(path, args.output_len.0, tokenize_ref)?
        }
        // ids from a band every common vocabulary has, away from special tokens
        None => workload::synthetic(
            args.num_prompts,
            args.input_len,
            args.output_len,
            (vocab.min(1000) as u32 / 4, (vocab.min(32_000) as u32).max(2)),
            args.seed,
        ),
    };
    let concurrency = args.concurrency.unwrap_or(workloads.len()).max(1);
    eprintln!(
        "benchmarking {label}: {} requests, concurrency {concurrency}, rate {}",
        workloads.len(),
        args.request_rate.map_or("unlimited".into(), |r| format!("{r}/s"))
    );
    let before = counters();
    let (records, duration) = drive(&workloads, concurrency, args.request_rate, args.seed, sender);
    let summary = Summary::of(&records, duration);
    summary.print(&label);
    let spec = Speculated::between(&before, &counters());
    if let Some(s) = &spec {
        println!(
            "speculation: {} guessed, {} kept ({:.1}%), {:.2} tokens per verifying step",
            s.guessed,
            s.kept,
            100.0 * s.acceptance(),
            s.tokens_per_step()
        );
    }
    if let Some(r) = records.iter().find(|r| !r.ok) {
        eprintln!("first failure: {}", r.error.as_deref().unwrap_or("?"));
    }
    if let Some(path) = &args.json {
        let mut json = summary.json();
        json["target"] = label.into();
        json["concurrency"] = concurrency.into();
        json["request_rate"] = args.request_rate.into();
        if let Some(s) = &spec {
            json["speculation"] = serde_json::json!({"guessed": s.guessed, "kept": s.kept,
                "acceptance": s.acceptance(), "tokens_per_step": s.tokens_per_step()});
        }
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    if summary.requests == 0 {
        bail!("every request failed");
    }
    Ok(())
}

/// Runs every workload with at most `concurrency` in flight, arriving all at
/// once or as a Poisson process; returns the records and the wall time.
fn drive(
    workloads: &[Workload],
    concurrency: usize,
    rate: Option<f64>,
    seed: u64,
    send: Sender,
) -> (Vec<RequestRecord>, f64) {
    let bar = indicatif::ProgressBar::new(workloads.len() as u64);
    let next = AtomicUsize::new(0);
    let records = Mutex::new(vec![RequestRecord::default(); workloads.len()]);
    // arrival time of each request, relative to the start
    let mut rng = Rng::new(seed ^ 0x5EED);
    let mut t = 0.0;
    let arrivals: Vec<f64> = workloads
        .iter()
        .map(|_| {
            if let Some(r) = rate {
                t += -(1.0 - rng.next_f64()).ln() / r;
            }
            t
        })
        .collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..concurrency.min(workloads.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= workloads.len() {
                        return;
                    }
                    let wait = Duration::from_secs_f64(arrivals[i]).saturating_sub(started.elapsed());
                    std::thread::sleep(wait);
                    let record = send(&workloads[i]);
                    records.lock().unwrap_or_else(|p| p.into_inner())[i] = record;
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    (records.into_inner().unwrap_or_else(|p| p.into_inner()), started.elapsed().as_secs_f64())
}

fn in_process(engine: &EngineHandle, w: &Workload) -> RequestRecord {
    let request = GenerationRequest {
        prompt: w.prompt.clone(),
        sampling: SamplingParams::default(),
        max_tokens: w.max_tokens,
        stop_strings: Vec::new(),
        stop_token_ids: Vec::new(),
        logprobs: None,
        grammar: None,
        keep_special_tokens: false,
    };
    let sent = Instant::now();
    let mut record = RequestRecord { prompt_tokens: w.prompt.len(), ..Default::default() };
    let mut rx = match engine.submit(request) {
        Ok((_, rx)) => rx,
        Err(e) => {
            record.error = Some(match e {
                SubmitError::QueueFull => "queue full".into(),
                SubmitError::Invalid(m) => m,
                SubmitError::Stopped => "engine stopped".into(),
            });
            return record;
        }
    };
    let mut last = sent;
    while let Some(event) = rx.blocking_recv() {
        match event {
            Event::Token { .. } => {
                let now = Instant::now();
                if record.output_tokens == 0 {
                    record.ttft = now.duration_since(sent).as_secs_f64();
                } else {
                    record.itl.push(now.duration_since(last).as_secs_f64());
                }
                last = now;
                record.output_tokens += 1;
            }
            Event::Finished { .. } => {
                record.ok = true;
                break;
            }
            Event::Error(e) => {
                record.error = Some(e);
                break;
            }
        }
    }
    record.e2e = last.duration_since(sent).as_secs_f64();
    record
}
