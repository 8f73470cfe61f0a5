//! The client side of the serving engine: its sizes (`EngineConfig`), and
//! the handle any thread submits requests through, which checks them
//! (lengths, vocabulary, sampling, grammar) before the engine sees them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::constraint::Grammars;
use crate::model::Model;
use crate::serving::metrics::Metrics;
use crate::serving::sequence::{Event, GenerationRequest, Sequence};
use crate::speculative::{Drafter, Speculation};
use crate::tokenizer::Tokenizer;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub num_blocks: usize,
    pub block_size: usize,
    /// Most tokens in one forward pass (decode tokens + prompt chunks).
    pub max_batch_tokens: usize,
    /// Most sequences running at once.
    pub max_running: usize,
    /// Most requests waiting to start; more are refused.
    pub max_queue: usize,
    /// Guess and verify tokens of decoding sequences (prompt lookup).
    pub speculation: Option<Speculation>,
    /// With `speculation`, guess with this smaller model instead.
    pub draft: Option<Drafter>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            num_blocks: 1024,
            block_size: 16,
            max_batch_tokens: 512,
            max_running: 64,
            max_queue: 256,
            speculation: None,
            draft: None,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: try again later.
    QueueFull,
    /// The request can never run (too long, bad parameters).
    Invalid(String),
    /// The engine has stopped.
    Stopped,
}

/// What a handle tells the engine thread.
pub(super) enum Command {
    Submit(Vec<Sequence>),
    Abort(u64),
}

/// Cheap to clone; used by every connection.
#[derive(Clone)]
pub struct EngineHandle {
    commands: Sender<Command>,
    next_id: Arc<AtomicU64>,
    /// requests accepted but not yet running (the engine counts them down)
    pub(super) queued: Arc<AtomicUsize>,
    pub config: EngineConfig,
    pub max_context: usize,
    pub vocab_size: usize,
    pub metrics: Arc<Metrics>,
    /// why the engine stopped for good (the engine sets it)
    pub(super) broken: Arc<OnceLock<String>>,
    grammars: Arc<GrammarSource>,
}

/// The model's grammar compiler, built when a request first needs it.
struct GrammarSource {
    tokenizer: Option<Arc<Tokenizer>>,
    vocab_size: usize,
    eos_token_ids: Vec<u32>,
    built: OnceLock<std::result::Result<Grammars, String>>,
}

impl GrammarSource {
    fn get(&self) -> std::result::Result<&Grammars, SubmitError> {
        let built = self.built.get_or_init(|| {
            let tokenizer = self.tokenizer.as_ref().ok_or("this model has no tokenizer, so no grammar applies")?;
            Grammars::new(tokenizer, self.vocab_size, &self.eos_token_ids).map_err(|e| e.to_string())
        });
        built.as_ref().map_err(|e| SubmitError::Invalid(e.clone()))
    }
}

impl EngineHandle {
    /// A handle for an engine over `model`, and the receiving end of its commands.
    pub(super) fn new(
        model: &Model,
        tokenizer: Option<Arc<Tokenizer>>,
        config: &EngineConfig,
    ) -> (Self, Receiver<Command>) {
        let (tx, rx) = channel();
        let handle = EngineHandle {
            commands: tx,
            next_id: Arc::new(AtomicU64::new(1)),
            queued: Arc::new(AtomicUsize::new(0)),
            max_context: model.config.max_position_embeddings,
            vocab_size: model.config.vocab_size,
            config: config.clone(),
            metrics: Arc::new(Metrics::default()),
            broken: Arc::new(OnceLock::new()),
            grammars: Arc::new(GrammarSource {
                eos_token_ids: eos_token_ids(model, tokenizer.as_deref()),
                tokenizer,
                vocab_size: model.config.vocab_size,
                built: OnceLock::new(),
            }),
        };
        (handle, rx)
    }

    /// Queues a request; its events arrive on the returned receiver, which
    /// the caller drops to cancel.
    pub fn submit(&self, request: GenerationRequest) -> Result<(u64, UnboundedReceiver<Event>), SubmitError> {
        let mut one = self.submit_all(vec![request])?;
        Ok(one.pop().expect("one request, one receiver"))
    }

    /// Queues requests together: all are accepted or none is, and the
    /// engine sees them in one go, so they start in the same step (the `n`
    /// choices of one API request, or a test that needs them to meet).
    pub fn submit_all(
        &self,
        requests: Vec<GenerationRequest>,
    ) -> Result<Vec<(u64, UnboundedReceiver<Event>)>, SubmitError> {
        if self.broken().is_some() {
            return Err(SubmitError::Stopped);
        }
        let mut constraints = Vec::with_capacity(requests.len());
        for request in &requests {
            self.check(request)?;
            let compiled = match &request.grammar {
                Some(g) => Some(self.grammars.get()?.compile(g).map_err(|e| SubmitError::Invalid(e.to_string()))?),
                None => None,
            };
            constraints.push(compiled);
        }
        let count = requests.len();
        if count > self.config.max_queue {
            return Err(SubmitError::Invalid(format!(
                "{count} sequences at once; the queue holds at most {}",
                self.config.max_queue
            )));
        }
        // reserve the queue slots, or refuse
        let queued = self.queued.fetch_add(count, Ordering::SeqCst);
        if queued + count > self.config.max_queue {
            self.queued.fetch_sub(count, Ordering::SeqCst);
            return Err(SubmitError::QueueFull);
        }
        let mut sequences = Vec::with_capacity(count);
        let mut receivers = Vec::with_capacity(count);
        for (request, constraint) in requests.into_iter().zip(constraints) {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = unbounded_channel();
            sequences.push(Sequence::new(id, request, constraint, tx));
            receivers.push((id, rx));
        }
        if self.commands.send(Command::Submit(sequences)).is_err() {
            self.queued.fetch_sub(count, Ordering::SeqCst);
            return Err(SubmitError::Stopped);
        }
        Ok(receivers)
    }

    /// Why `request` can never run, if it cannot.
    fn check(&self, request: &GenerationRequest) -> Result<(), SubmitError> {
        let total = request.prompt.len() + request.max_tokens;
        if request.prompt.is_empty() {
            return Err(SubmitError::Invalid("the prompt is empty".into()));
        }
        if request.max_tokens == 0 {
            return Err(SubmitError::Invalid("max_tokens must be at least 1".into()));
        }
        if total > self.max_context {
            return Err(SubmitError::Invalid(format!(
                "prompt ({} tokens) + max_tokens ({}) exceeds the context of {} tokens",
                request.prompt.len(),
                request.max_tokens,
                self.max_context
            )));
        }
        let blocks_needed = total.div_ceil(self.config.block_size);
        if blocks_needed > self.config.num_blocks {
            return Err(SubmitError::Invalid(format!(
                "{total} tokens need {blocks_needed} KV blocks; the cache has {}",
                self.config.num_blocks
            )));
        }
        if let Some(&bad) = request.prompt.iter().find(|&&t| t as usize >= self.vocab_size) {
            return Err(SubmitError::Invalid(format!("token id {bad} is outside the vocabulary")));
        }
        if let Some((bad, _)) = request.sampling.logit_bias.iter().find(|(t, _)| *t as usize >= self.vocab_size) {
            return Err(SubmitError::Invalid(format!("logit_bias names token {bad}, outside the vocabulary")));
        }
        request.sampling.validate().map_err(SubmitError::Invalid)
    }

    pub fn abort(&self, id: u64) {
        let _ = self.commands.send(Command::Abort(id));
    }

    /// Why the engine stopped for good, or `None` while it runs.
    pub fn broken(&self) -> Option<&str> {
        self.broken.get().map(String::as_str)
    }
}

/// The ids a grammar may end on: the config's EOS and the tokenizer's.
fn eos_token_ids(model: &Model, tokenizer: Option<&Tokenizer>) -> Vec<u32> {
    let mut ids = model.config.eos_token_ids.clone();
    if let Some(t) = tokenizer
        && let Some(id) = t.eos_token.as_deref().and_then(|e| t.token_to_id(e))
    {
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}
