//! The worker: one thread that owns the model and the serving engine. The
//! UI sends it [`Command`]s and drains its [`Event`]s once per frame, so the
//! window never waits on a model; long jobs (loading, a benchmark, a
//! comparison) run on threads of their own and report back through the
//! worker's command channel. Every event asks for a repaint.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrum_backends::BackendChoice;
use ferrum_engine::chat_template::Message;
use ferrum_engine::eval::{VariantReport, compare};
use ferrum_engine::kv_cache::KvCache;
use ferrum_engine::memory::{MemoryNeed, Workload};
use ferrum_engine::model::QuantPolicy;
use ferrum_engine::quant::QuantFormat;
use ferrum_engine::sampler::SamplingParams;
use ferrum_engine::serving::{EngineConfig, EngineHandle, Event as EngineEvent, GenerationRequest, spawn};
use ferrum_engine::source::ModelSource;
use ferrum_engine::tokenizer::Tokenizer;
use ferrum_engine::{Backend, DType, Model};
use tokio::sync::mpsc::UnboundedReceiver;

/// How the UI asks the window to draw again (eframe's `request_repaint`).
pub type Repaint = Arc<dyn Fn() + Send + Sync>;

/// A model to load, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadSpec {
    pub path: PathBuf,
    pub backend: BackendChoice,
    pub quant: Option<QuantFormat>,
    /// Weights left as stored (patterns, `*` wildcards).
    pub exclude: Vec<String>,
    pub kv: DType,
    /// The KV cache the chat and the benchmark get.
    pub kv_cache_mib: usize,
}

/// What loading `LoadSpec` would take, found before loading.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub spec: LoadSpec,
    pub card: ModelCard,
    pub need: MemoryNeed,
    /// What the backend says it can still give, when it can say.
    pub available: Option<u64>,
    pub device: String,
}

/// A model as the model panel describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelCard {
    pub path: PathBuf,
    pub architecture: String,
    pub parameters: usize,
    pub active_parameters: usize,
    /// (stored dtype, parameters)
    pub dtypes: Vec<(String, usize)>,
    pub context: usize,
    pub has_chat_template: bool,
}

/// A model on its backend, as loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub card: ModelCard,
    pub backend: String,
    pub quant: Option<QuantFormat>,
    pub kv: DType,
    /// Measured after loading.
    pub weight_bytes: usize,
    pub kv_cache_bytes: usize,
    pub estimate: MemoryNeed,
    pub seconds: f64,
}

/// One chat turn to answer.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub system: String,
    /// (role, text), oldest first; the last is the user's.
    pub history: Vec<(String, String)>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
}

/// What one answer took.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ChatStats {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Time to the first token, seconds.
    pub ttft: f64,
    pub prefill_tokens_per_sec: f64,
    pub decode_tokens_per_sec: f64,
    /// Mean time per token after the first, seconds.
    pub tpot: f64,
    pub stopped: bool,
}

/// A load test of the loaded model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BenchSpec {
    pub input_len: usize,
    pub output_len: usize,
    pub requests: usize,
    pub concurrency: usize,
}

/// A benchmark's results, per request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BenchReport {
    pub spec: Option<BenchSpec>,
    pub seconds: f64,
    pub output_tokens: usize,
    /// (ttft, tpot) per request, seconds
    pub requests: Vec<(f64, f64)>,
}

/// Formats to compare with the unquantized model on a text.
#[derive(Clone, Debug)]
pub struct CompareSpec {
    pub text: PathBuf,
    pub formats: Vec<QuantFormat>,
    pub ctx: usize,
    pub windows: usize,
}

/// One variant of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareRow {
    /// "as stored" (the reference) or the format
    pub name: String,
    pub weight_bytes: usize,
    pub report: VariantReport,
}

/// A comparison's results and the text they were measured on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Comparison {
    pub rows: Vec<CompareRow>,
    /// The scored tokens' text, in order (what `kl_per_token` refers to).
    pub pieces: Vec<String>,
}

/// A reading of the engine's counters, for the dashboard's time series.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub at: f64,
    pub decode_tokens_per_sec: f64,
    pub prefill_tokens_per_sec: f64,
    /// Weights plus the KV blocks in use.
    pub memory_bytes: f64,
    pub running: f64,
}

pub enum Command {
    Devices,
    /// fetch the default model into the cache (or find it there)
    PullDefault,
    Estimate(LoadSpec),
    Load(LoadSpec),
    CancelLoad,
    Chat(ChatRequest),
    Stop,
    Bench(BenchSpec),
    Compare(CompareSpec),
    CancelCompare,
    // from the worker's own threads
    LoadDone(u64, Result<Box<(Model, ModelSource)>, String>, LoadSpec, f64),
}

pub enum Event {
    Devices(Vec<(String, Result<String, String>)>),
    Pulled(Result<PathBuf, String>),
    /// the share of layers loaded so far
    LoadProgress(f32),
    Estimate(Result<Estimate, String>),
    Loaded(Result<Loaded, String>),
    Token(String),
    ChatDone(ChatStats),
    ChatError(String),
    BenchDone(Result<BenchReport, String>),
    CompareProgress(f32),
    CompareDone(Result<Comparison, String>),
    Sample(Sample),
}

/// The UI's end of the worker.
pub struct WorkerHandle {
    pub commands: Sender<Command>,
    pub events: Receiver<Event>,
}

impl WorkerHandle {
    pub fn send(&self, c: Command) {
        let _ = self.commands.send(c);
    }
}

/// Starts the worker thread.
pub fn start(repaint: Repaint) -> WorkerHandle {
    let (commands, rx) = channel();
    let (events_tx, events) = channel();
    let worker = Worker {
        own: commands.clone(),
        events: events_tx,
        repaint,
        load_generation: 0,
        load_cancel: Arc::new(AtomicBool::new(false)),
        model: None,
        chat: None,
        compare_cancel: Arc::new(AtomicBool::new(false)),
        started: Instant::now(),
        last_sample: None,
        backends: Vec::new(),
    };
    std::thread::Builder::new()
        .name("ferrum-app-worker".into())
        .spawn(move || worker.run(rx))
        .expect("the worker thread starts");
    WorkerHandle { commands, events }
}

/// The loaded model, its engine and what the panels need of it.
struct Active {
    source: Arc<ModelSource>,
    engine: EngineHandle,
    tokenizer: Option<Arc<Tokenizer>>,
    eos: Vec<u32>,
    spec: LoadSpec,
    weight_bytes: usize,
    block_bytes: usize,
}

/// An answer being streamed.
struct Streaming {
    rx: UnboundedReceiver<EngineEvent>,
    sent: Instant,
    first: Option<Instant>,
    last: Instant,
    tokens: usize,
}

struct Worker {
    own: Sender<Command>,
    events: Sender<Event>,
    repaint: Repaint,
    /// bumped by every load and cancel: an older load's result is dropped
    load_generation: u64,
    /// set by `CancelLoad`: the running load stops at its next layer
    load_cancel: Arc<AtomicBool>,
    model: Option<Active>,
    chat: Option<Streaming>,
    compare_cancel: Arc<AtomicBool>,
    started: Instant,
    /// (when, generation tokens, prompt tokens) at the last sample
    last_sample: Option<(Instant, u64, u64)>,
    /// backends opened so far: opening one probes devices, done once each
    backends: Vec<(BackendChoice, Arc<dyn Backend>)>,
}

impl Worker {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
        (self.repaint)();
    }

    fn run(mut self, rx: Receiver<Command>) {
        loop {
            // poll quickly while an answer streams, else wait for work
            let wait = if self.chat.is_some() { Duration::from_millis(5) } else { Duration::from_millis(500) };
            match rx.recv_timeout(wait) {
                Ok(c) => self.apply(c),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.stream();
            self.sample();
        }
    }

    fn apply(&mut self, c: Command) {
        match c {
            Command::Devices => self.emit(Event::Devices(devices())),
            Command::PullDefault => {
                let (events, repaint) = (self.events.clone(), self.repaint.clone());
                std::thread::spawn(move || {
                    let pulled =
                        caught(|| ferrum_hub::resolve(ferrum_hub::DEFAULT_MODEL).map_err(|e| format!("{e:#}")));
                    let _ = events.send(Event::Pulled(pulled));
                    repaint();
                });
            }
            Command::Estimate(spec) => {
                let e = self.backend(spec.backend).and_then(|b| estimate(&spec, b));
                self.emit(Event::Estimate(e));
            }
            Command::Load(spec) => self.load(spec),
            Command::CancelLoad => {
                self.load_generation += 1;
                self.load_cancel.store(true, Ordering::Relaxed);
                self.emit(Event::Loaded(Err("loading cancelled".into())));
            }
            Command::LoadDone(generation, result, spec, seconds) => {
                if generation == self.load_generation {
                    let loaded = result.and_then(|b| self.activate(*b, spec, seconds));
                    self.emit(Event::Loaded(loaded));
                }
            }
            Command::Chat(req) => {
                if let Err(e) = self.chat(req) {
                    self.emit(Event::ChatError(e));
                }
            }
            Command::Stop => {
                // dropping the receiver aborts the sequence and frees its blocks
                if let Some(s) = self.chat.take() {
                    let stats = s.stats(true);
                    self.emit(Event::ChatDone(stats));
                }
            }
            Command::Bench(spec) => self.bench(spec),
            Command::Compare(spec) => self.compare(spec),
            Command::CancelCompare => self.compare_cancel.store(true, Ordering::Relaxed),
        }
    }

    /// The backend `choice` names, opened once.
    fn backend(&mut self, choice: BackendChoice) -> Result<Arc<dyn Backend>, String> {
        if let Some((_, b)) = self.backends.iter().find(|(c, _)| *c == choice) {
            return Ok(b.clone());
        }
        let b = ferrum_backends::open(choice, None).map_err(|e| e.to_string())?;
        self.backends.push((choice, b.clone()));
        Ok(b)
    }

    /// Loads on a thread of its own; the result comes back as `LoadDone`.
    fn load(&mut self, spec: LoadSpec) {
        self.load_generation += 1;
        self.load_cancel.store(true, Ordering::Relaxed); // a load still running is superseded
        self.load_cancel = Arc::new(AtomicBool::new(false));
        let (generation, cancel) = (self.load_generation, self.load_cancel.clone());
        let (own, events, repaint) = (self.own.clone(), self.events.clone(), self.repaint.clone());
        let backend = self.backend(spec.backend);
        std::thread::spawn(move || {
            let started = Instant::now();
            let progress = |done: usize, total: usize| {
                let _ = events.send(Event::LoadProgress(done as f32 / total.max(1) as f32));
                repaint();
                !cancel.load(Ordering::Relaxed)
            };
            let result = backend.and_then(|b| caught(|| load_model(&spec, b, &progress))).map(Box::new);
            let _ = own.send(Command::LoadDone(generation, result, spec, started.elapsed().as_secs_f64()));
        });
    }

    /// Starts the serving engine over a loaded model.
    fn activate(
        &mut self,
        (model, source): (Model, ModelSource),
        spec: LoadSpec,
        seconds: f64,
    ) -> Result<Loaded, String> {
        self.chat = None;
        self.model = None; // the old engine stops when its handle goes
        let block_size = 16;
        let block_bytes = KvCache::bytes_per_block(&model.config, block_size).max(1);
        let num_blocks = ((spec.kv_cache_mib << 20) / block_bytes).max(1);
        let config = EngineConfig { num_blocks, block_size, max_batch_tokens: 512, ..Default::default() };
        let weight_bytes = model.weight_bytes();
        let backend = model.backend().name().to_string();
        let kv = model.config.kv_cache_dtype;
        let tokenizer = source.tokenizer.clone().map(Arc::new);
        let engine = spawn(model, tokenizer.clone(), config).map_err(|e| e.to_string())?;
        let estimate = estimate(&spec, self.backend(spec.backend)?)?.need;
        let loaded = Loaded {
            card: card(&source),
            backend,
            quant: spec.quant,
            kv,
            weight_bytes,
            kv_cache_bytes: num_blocks * block_bytes,
            estimate,
            seconds,
        };
        let eos = source.eos_token_ids();
        self.model = Some(Active { source: Arc::new(source), engine, tokenizer, eos, spec, weight_bytes, block_bytes });
        self.last_sample = None;
        Ok(loaded)
    }

    fn chat(&mut self, req: ChatRequest) -> Result<(), String> {
        let active = self.model.as_ref().ok_or("load a model first")?;
        let template = active.source.chat_template().map_err(|e| e.to_string())?;
        let mut messages = Vec::new();
        if !req.system.trim().is_empty() {
            messages.push(Message::new("system", &req.system));
        }
        messages.extend(req.history.iter().map(|(role, text)| Message::new(role, text)));
        let text = template.render(&messages, true).map_err(|e| e.to_string())?;
        let tokenizer = active.tokenizer.as_ref().ok_or("this model has no tokenizer")?;
        let prompt = tokenizer.encode(&text, false).map_err(|e| e.to_string())?;
        let room = active.engine.max_context.saturating_sub(prompt.len());
        if room == 0 {
            return Err(format!("the conversation ({} tokens) fills the model's context", prompt.len()));
        }
        let request = GenerationRequest {
            prompt,
            sampling: req.sampling,
            max_tokens: req.max_tokens.clamp(1, room),
            stop_token_ids: active.eos.clone(),
            ..Default::default()
        };
        let (_, rx) = active.engine.submit(request).map_err(|e| format!("{e:?}"))?;
        let now = Instant::now();
        self.chat = Some(Streaming { rx, sent: now, first: None, last: now, tokens: 0 });
        Ok(())
    }

    /// Passes on what the streaming answer produced since the last call.
    fn stream(&mut self) {
        let mut out = Vec::new();
        let mut done = None;
        if let Some(s) = self.chat.as_mut() {
            while let Ok(e) = s.rx.try_recv() {
                let now = Instant::now();
                match e {
                    EngineEvent::Token { text, .. } => {
                        s.first.get_or_insert(now);
                        s.last = now;
                        s.tokens += 1;
                        out.push(Event::Token(text));
                    }
                    EngineEvent::Finished { text_tail, prompt_tokens, .. } => {
                        if !text_tail.is_empty() {
                            out.push(Event::Token(text_tail));
                        }
                        let mut stats = s.stats(false);
                        stats.prompt_tokens = prompt_tokens;
                        stats.prefill_tokens_per_sec = prompt_tokens as f64 / stats.ttft.max(1e-9);
                        done = Some(Event::ChatDone(stats));
                        break;
                    }
                    EngineEvent::Error(e) => {
                        done = Some(Event::ChatError(e));
                        break;
                    }
                }
            }
        }
        let finished = done.is_some();
        for e in out.into_iter().chain(done) {
            self.emit(e);
        }
        if finished {
            self.chat = None;
        }
    }

    /// Every half second: the engine's token rates and memory in use.
    fn sample(&mut self) {
        let Some(active) = &self.model else { return };
        let now = Instant::now();
        let m = &active.engine.metrics;
        let generated = m.generation_tokens.load(Ordering::Relaxed);
        let prompted = m.prompt_tokens.load(Ordering::Relaxed);
        let Some((then, g0, p0)) = self.last_sample else {
            self.last_sample = Some((now, generated, prompted));
            return;
        };
        let dt = now.duration_since(then).as_secs_f64();
        if dt < 0.5 {
            return;
        }
        self.last_sample = Some((now, generated, prompted));
        let blocks = m.kv_blocks_used.load(Ordering::Relaxed) as usize;
        let sample = Sample {
            at: now.duration_since(self.started).as_secs_f64(),
            decode_tokens_per_sec: (generated - g0) as f64 / dt,
            prefill_tokens_per_sec: (prompted - p0) as f64 / dt,
            memory_bytes: (active.weight_bytes + blocks * active.block_bytes) as f64,
            running: m.running.load(Ordering::Relaxed) as f64,
        };
        self.emit(Event::Sample(sample));
    }

    /// A load test on a thread of its own, through the same engine.
    fn bench(&mut self, spec: BenchSpec) {
        let Some(active) = &self.model else {
            self.emit(Event::BenchDone(Err("load a model first".into())));
            return;
        };
        let (engine, events, repaint) = (active.engine.clone(), self.events.clone(), self.repaint.clone());
        std::thread::spawn(move || {
            let result = caught(|| run_bench(&engine, spec));
            let _ = events.send(Event::BenchDone(result));
            repaint();
        });
    }

    /// Each format against the unquantized model on a text, on a thread of
    /// its own; `CancelCompare` stops it between passes.
    fn compare(&mut self, spec: CompareSpec) {
        let Some(active) = &self.model else {
            self.emit(Event::CompareDone(Err("load a model first".into())));
            return;
        };
        self.compare_cancel = Arc::new(AtomicBool::new(false));
        let cancel = self.compare_cancel.clone();
        let (source, load) = (active.source.clone(), active.spec.clone());
        let backend = match self.backend(load.backend) {
            Ok(b) => b,
            Err(e) => return self.emit(Event::CompareDone(Err(e))),
        };
        let (events, repaint) = (self.events.clone(), self.repaint.clone());
        std::thread::spawn(move || {
            let progress = |f: f32| {
                let _ = events.send(Event::CompareProgress(f));
                repaint();
            };
            let result = caught(|| run_compare(&source, backend, &load, &spec, &cancel, progress));
            let _ = events.send(Event::CompareDone(result));
            repaint();
        });
    }
}

impl Streaming {
    fn stats(&self, stopped: bool) -> ChatStats {
        let ttft = self.first.map_or(0.0, |f| f.duration_since(self.sent).as_secs_f64());
        let decode = self.first.map_or(0.0, |f| self.last.duration_since(f).as_secs_f64());
        let after_first = self.tokens.saturating_sub(1);
        ChatStats {
            prompt_tokens: 0,
            completion_tokens: self.tokens,
            ttft,
            prefill_tokens_per_sec: 0.0,
            decode_tokens_per_sec: if decode > 0.0 { after_first as f64 / decode } else { 0.0 },
            tpot: if after_first > 0 { decode / after_first as f64 } else { 0.0 },
            stopped,
        }
    }
}

/// A job's panic as its error, so the window reports it instead of waiting
/// for an answer that never comes.
fn caught<T>(job: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or_else(|p| {
        let why = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
        Err(format!("internal error: {}", why.unwrap_or_else(|| "a panic".into())))
    })
}

/// Every backend this build knows, with its device or why it cannot run.
fn devices() -> Vec<(String, Result<String, String>)> {
    ferrum_backends::probe_all(None)
        .into_iter()
        .map(|(name, b)| {
            let described = b.map(|b| match b.memory_available() {
                Some(free) => format!("{}, {} free", b.device_description(), crate::human_bytes(free as f64)),
                None => b.device_description(),
            });
            (name.to_string(), described)
        })
        .collect()
}

fn card(source: &ModelSource) -> ModelCard {
    let c = &source.config;
    let mut dtypes: Vec<(String, usize)> = Vec::new();
    for t in source.weights.stored() {
        match dtypes.iter_mut().find(|(d, _)| d == t.dtype) {
            Some((_, n)) => *n += t.elements,
            None => dtypes.push((t.dtype.to_string(), t.elements)),
        }
    }
    let counts = c.parameter_counts();
    ModelCard {
        path: source.path.clone(),
        architecture: c.architecture.hf_name().to_string(),
        parameters: counts.total,
        active_parameters: counts.active,
        dtypes,
        context: c.max_position_embeddings,
        has_chat_template: source.chat_template().is_ok(),
    }
}

/// The source opened and its config as it will run (the cache dtype).
fn open(spec: &LoadSpec) -> Result<(ModelSource, ferrum_engine::ModelConfig), String> {
    if spec.path.as_os_str().is_empty() {
        return Err("give a model folder or a .gguf file".into());
    }
    let source = ModelSource::open(&spec.path).map_err(|e| e.to_string())?;
    let mut config = source.config.clone();
    config.kv_cache_dtype = spec.kv;
    Ok((source, config))
}

fn workload(spec: &LoadSpec, config: &ferrum_engine::ModelConfig) -> Workload {
    Workload { kv_cache_bytes: spec.kv_cache_mib << 20, step_tokens: 512, logit_rows: 64.min(config.vocab_size) }
}

/// What loading would take, from the files and a dry run of the loader.
pub fn estimate(spec: &LoadSpec, backend: Arc<dyn Backend>) -> Result<Estimate, String> {
    let (source, config) = open(spec)?;
    let policy = QuantPolicy::new(spec.quant, &spec.exclude);
    let need = MemoryNeed::of(&config, &source.weights, &policy, backend.as_ref(), workload(spec, &config))
        .map_err(|e| e.to_string())?;
    Ok(Estimate {
        spec: spec.clone(),
        card: card(&source),
        need,
        available: backend.memory_available(),
        device: backend.device_description(),
    })
}

/// Loads as `ferrum` does: refused first when it cannot fit.
fn load_model(
    spec: &LoadSpec,
    backend: Arc<dyn Backend>,
    progress: &dyn Fn(usize, usize) -> bool,
) -> Result<(Model, ModelSource), String> {
    let (source, config) = open(spec)?;
    let runs = [ferrum_engine::ops::OpKind::KvStore, ferrum_engine::ops::OpKind::Attention]
        .iter()
        .all(|&op| backend.supports(op, spec.kv));
    if !runs {
        return Err(format!("the {} backend cannot hold a KV cache of {}", backend.name(), spec.kv));
    }
    let policy = QuantPolicy::new(spec.quant, &spec.exclude);
    let need = MemoryNeed::of(&config, &source.weights, &policy, backend.as_ref(), workload(spec, &config))
        .map_err(|e| e.to_string())?;
    need.check(backend.memory_available(), &backend.device_description()).map_err(|e| e.to_string())?;
    let model = Model::from_store_with_progress(config, &source.weights, backend, &policy, progress)
        .map_err(|e| e.to_string())?;
    Ok((model, source))
}

fn run_bench(engine: &EngineHandle, spec: BenchSpec) -> Result<BenchReport, String> {
    let vocab = engine.vocab_size.clamp(2, 32_000) as u32;
    let started = Instant::now();
    let records = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let output = std::sync::atomic::AtomicUsize::new(0);
    let failure = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..spec.concurrency.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= spec.requests {
                        return;
                    }
                    let prompt = (0..spec.input_len.max(1))
                        .map(|j| (i * 131 + j * 17) as u32 % (vocab / 2) + vocab / 4)
                        .collect();
                    let request =
                        GenerationRequest { prompt, max_tokens: spec.output_len.max(1), ..Default::default() };
                    let mut rx = match engine.submit(request) {
                        Ok((_, rx)) => rx,
                        Err(e) => {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:?}"));
                            return;
                        }
                    };
                    let sent = Instant::now();
                    let (mut first, mut last, mut n) = (None, sent, 0usize);
                    while let Some(e) = rx.blocking_recv() {
                        match e {
                            EngineEvent::Token { .. } => {
                                let now = Instant::now();
                                first.get_or_insert(now);
                                last = now;
                                n += 1;
                            }
                            _ => break,
                        }
                    }
                    output.fetch_add(n, Ordering::Relaxed);
                    let ttft = first.map_or(0.0, |f| f.duration_since(sent).as_secs_f64());
                    let tpot = match first {
                        Some(f) if n > 1 => last.duration_since(f).as_secs_f64() / (n - 1) as f64,
                        _ => 0.0,
                    };
                    records.lock().unwrap_or_else(|p| p.into_inner()).push((ttft, tpot));
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(BenchReport {
        spec: Some(spec),
        seconds: started.elapsed().as_secs_f64(),
        output_tokens: output.into_inner(),
        requests: records.into_inner().unwrap_or_else(|p| p.into_inner()),
    })
}

fn run_compare(
    source: &ModelSource,
    backend: Arc<dyn Backend>,
    load: &LoadSpec,
    spec: &CompareSpec,
    cancel: &AtomicBool,
    progress: impl Fn(f32),
) -> Result<Comparison, String> {
    let text = std::fs::read_to_string(&spec.text).map_err(|e| format!("{}: {e}", spec.text.display()))?;
    let tokenizer = source.tokenizer.as_ref().ok_or("this model has no tokenizer")?;
    let tokens = tokenizer.encode(&text, false).map_err(|e| e.to_string())?;
    let variants: Vec<Option<QuantFormat>> =
        std::iter::once(None).chain(spec.formats.iter().copied().map(Some)).collect();
    let mut models = Vec::new();
    for q in &variants {
        if cancel.load(Ordering::Relaxed) {
            return Err("comparison cancelled".into());
        }
        let mut config = source.config.clone();
        config.kv_cache_dtype = load.kv;
        let policy = QuantPolicy::new(*q, &load.exclude);
        let model = Model::from_store_quantized(config, &source.weights, backend.clone(), &policy);
        models.push(model.map_err(|e| e.to_string())?);
    }
    let refs: Vec<&Model> = models.iter().collect();
    let reports = compare(&refs, &tokens, spec.ctx, Some(spec.windows), 8, |done, total| {
        progress(done as f32 / total.max(1) as f32);
        !cancel.load(Ordering::Relaxed)
    })
    .map_err(|e| e.to_string())?;
    let windows = spec.windows.min(tokens.len() / spec.ctx.max(1));
    let mut pieces = Vec::with_capacity(windows * spec.ctx);
    for w in 0..windows {
        for i in 1..spec.ctx {
            let id = tokens[w * spec.ctx + i];
            pieces.push(tokenizer.decode(&[id], false).unwrap_or_default());
        }
    }
    let rows = variants
        .iter()
        .zip(models.iter())
        .zip(reports)
        .map(|((q, m), report)| CompareRow {
            name: q.map_or("as stored".to_string(), |q| q.to_string()),
            weight_bytes: m.weight_bytes(),
            report,
        })
        .collect();
    Ok(Comparison { rows, pieces })
}
