//! One request inside the engine: its tokens, its KV blocks, its sampler and
//! the streaming state that turns tokens into text events.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::constraint::{Constraint, Grammar};
use crate::generate::{FinishReason, StopMatcher};
use crate::sampler::{Sampler, SamplingParams};
use crate::serving::blocks::{BlockId, BlockManager, block_hash};
use crate::tokenizer::{IncrementalDecoder, Tokenizer};

/// What a client asks for.
#[derive(Clone, Debug, Default)]
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop_strings: Vec<String>,
    /// EOS and any other ids that end generation (not shown).
    pub stop_token_ids: Vec<u32>,
    /// Return each token's logprob and this many alternatives.
    pub logprobs: Option<usize>,
    /// What the output must follow (a JSON schema, regex, choice, grammar).
    pub grammar: Option<Grammar>,
    /// Keep special tokens in the text (a tool-call marker that is one).
    pub keep_special_tokens: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    /// (token, logprob), most likely first
    pub top: Vec<(u32, f32)>,
}

/// What the engine streams back for one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A generated token and the text it completes (may be empty while a
    /// character or a possible stop string is incomplete).
    Token {
        token: u32,
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    Finished {
        reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
        text_tail: String,
    },
    Error(String),
}

pub(crate) struct Sequence {
    pub id: u64,
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// tokens[..computed] are in the KV cache
    pub computed: usize,
    pub blocks: Vec<BlockId>,
    /// hashes of the leading full blocks registered for prefix caching
    pub block_hashes: Vec<u64>,
    pub sampler: Sampler,
    pub request: GenerationRequest,
    stops: StopMatcher,
    detok: IncrementalDecoder,
    pub events: UnboundedSender<Event>,
    pub arrived: Instant,
    pub last_token_at: Option<Instant>,
    /// counted once, even if the sequence is preempted and recomputed
    pub prompt_counted: bool,
    /// the request's grammar, compiled; taken out while a step computes its mask
    pub constraint: Option<Constraint>,
    /// this step's input when it verifies guesses: the pending token, then the guesses
    pub speculated: Vec<u32>,
    /// how many of `tokens` the draft model's cache holds (a prefix)
    pub draft_cached: usize,
    /// this step's guesses came from the draft model (which then cached them)
    pub drafted: bool,
}

impl Sequence {
    pub fn new(
        id: u64,
        request: GenerationRequest,
        constraint: Option<Constraint>,
        events: UnboundedSender<Event>,
    ) -> Self {
        Sequence {
            id,
            tokens: request.prompt.clone(),
            prompt_len: request.prompt.len(),
            computed: 0,
            blocks: Vec::new(),
            block_hashes: Vec::new(),
            sampler: Sampler::new(request.sampling.clone(), &request.prompt),
            stops: StopMatcher::new(request.stop_strings.clone()),
            detok: IncrementalDecoder::default(),
            request,
            events,
            arrived: Instant::now(),
            last_token_at: None,
            prompt_counted: false,
            constraint,
            speculated: Vec::new(),
            draft_cached: 0,
            drafted: false,
        }
    }

    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Tokens still to run through the model before the next sample.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.computed
    }

    /// This step's input: `take` tokens from `computed` (with the guesses
    /// after the pending token when it verifies some).
    pub fn step_tokens(&self, take: usize) -> &[u32] {
        if self.speculated.is_empty() { &self.tokens[self.computed..self.computed + take] } else { &self.speculated }
    }

    /// Grows the block table to hold `positions`; false (and nothing taken)
    /// when the pool is short.
    pub fn reserve(&mut self, blocks: &mut BlockManager, positions: usize) -> bool {
        let needed = positions.div_ceil(blocks.block_size).saturating_sub(self.blocks.len());
        if needed > blocks.free_count() {
            return false;
        }
        for _ in 0..needed {
            self.blocks.push(blocks.allocate().expect("counted"));
        }
        true
    }

    /// Starts from whatever whole leading blocks the prefix cache holds.
    pub fn adopt_cached_prefix(&mut self, blocks: &mut BlockManager) {
        let (cached, hashes) = blocks.cached_prefix(&self.tokens);
        blocks.share(&cached);
        self.computed = cached.len() * blocks.block_size;
        self.blocks = cached;
        self.block_hashes = hashes;
    }

    /// Registers blocks that became full of computed tokens.
    pub fn register_full_blocks(&mut self, blocks: &mut BlockManager) {
        let bs = blocks.block_size;
        while self.block_hashes.len() < self.computed / bs {
            let b = self.block_hashes.len();
            let parent = self.block_hashes.last().copied().unwrap_or(0);
            let h = block_hash(parent, &self.tokens[b * bs..(b + 1) * bs]);
            blocks.register(self.blocks[b], h);
            self.block_hashes.push(h);
        }
    }

    /// Gives every block back (finish, abort, or preemption).
    pub fn release(&mut self, blocks: &mut BlockManager) {
        blocks.release(&self.blocks);
        self.blocks.clear();
        self.block_hashes.clear();
        self.computed = 0;
        self.draft_cached = 0;
    }

    /// Records a sampled token; returns the events to send and whether the
    /// sequence is finished.
    pub fn push_token(
        &mut self,
        token: u32,
        logprobs: Option<TokenLogprobs>,
        tokenizer: Option<&Arc<Tokenizer>>,
    ) -> (Vec<Event>, Option<FinishReason>) {
        let finished = |s: &Self, reason, tail: String| Event::Finished {
            reason,
            prompt_tokens: s.prompt_len,
            completion_tokens: s.generated(),
            text_tail: tail,
        };
        if self.request.stop_token_ids.contains(&token) {
            let tail = self.stops.flush();
            return (vec![finished(self, FinishReason::Stop, tail)], Some(FinishReason::Stop));
        }
        let complete = self.constraint.as_ref().is_some_and(Constraint::is_finished);
        self.tokens.push(token);
        let generated = &self.tokens[self.prompt_len..];
        let skip_special = !self.request.keep_special_tokens;
        let piece = match tokenizer.map(|t| self.detok.step(t, generated, skip_special)) {
            Some(Ok(Some(p))) => p,
            Some(Err(e)) => return (vec![Event::Error(e.to_string())], Some(FinishReason::Stop)),
            _ => String::new(),
        };
        let (text, stopped) = self.stops.push(&piece);
        let mut events = vec![Event::Token { token, text, logprobs }];
        if stopped {
            events.push(finished(self, FinishReason::Stop, String::new()));
            return (events, Some(FinishReason::Stop));
        }
        // the grammar is complete: nothing more may follow
        if complete {
            let tail = self.stops.flush();
            events.push(finished(self, FinishReason::Stop, tail));
            return (events, Some(FinishReason::Stop));
        }
        if self.generated() >= self.request.max_tokens {
            let tail = self.stops.flush();
            events.push(finished(self, FinishReason::Length, tail));
            return (events, Some(FinishReason::Length));
        }
        (events, None)
    }
}
