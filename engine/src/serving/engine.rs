//! The engine loop: one thread owns the model and the KV cache and runs
//! continuous batching. Each step it schedules decode tokens of running
//! sequences, then chunks of prompts (new requests join while others
//! decode; long prompts are split so decoding never stalls), runs one
//! forward pass over them all, samples, and streams events back. When every
//! sequence sampled in a step is plain greedy without logprobs, the tokens
//! are picked on the device and only their ids come back.
//! Requests arrive through an `EngineHandle` (`handle.rs`) from any thread.
//!
//! A failure stays with the request that caused it: a forward pass that
//! fails (an error or a panic) is rerun one sequence at a time, and only
//! the sequences that fail alone get an error. A lost device, a backend
//! that fails a trivial op after a step where everything failed, or a panic
//! in the engine's own bookkeeping stop the engine: every request gets an
//! error, and the handle reports it broken so `/health` turns unhealthy.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::backend::{Backend, BackendExt};
use crate::constraint::{Constraint, TokenMask};
use crate::error::{Error, Result};
use crate::eval::log_softmax_at;
use crate::kv_cache::KvCache;
use crate::model::{Logits, LogitsWanted, Model, SeqChunk};
use crate::ops::{Add, Op};
use crate::sampler::DevicePick;
use crate::serving::blocks::BlockManager;
use crate::serving::handle::{Command, EngineConfig, EngineHandle};
use crate::serving::metrics::Metrics;
use crate::serving::sequence::{Event, Sequence, TokenLogprobs};
use crate::speculative::{self, DraftSeq, Drafter, NgramProposer, Proposer};
use crate::tokenizer::Tokenizer;

/// Starts the engine thread over `model`.
pub fn spawn(model: Model, tokenizer: Option<Arc<Tokenizer>>, config: EngineConfig) -> Result<EngineHandle> {
    if config.block_size == 0 || config.num_blocks == 0 || config.max_batch_tokens == 0 || config.max_running == 0 {
        return Err(Error::Request("engine sizes must be positive".into()));
    }
    let cache = KvCache::new(model.backend().as_ref(), &model.config, config.num_blocks, config.block_size)?;
    let (handle, rx) = EngineHandle::new(&model, tokenizer.clone(), &config);
    Metrics::set(&handle.metrics.healthy, 1);
    let cache_bytes = KvCache::bytes_per_block(&model.config, config.block_size) * config.num_blocks;
    Metrics::set(&handle.metrics.kv_cache_bytes, cache_bytes as u64);
    let _ = handle.metrics.kv_cache_dtype.set(model.config.kv_cache_dtype.name());
    let draft_cache = match config.draft.as_ref().filter(|_| config.speculation.is_some()) {
        Some(d) => {
            Drafter::new(d.model.clone(), &model)?;
            let backend = d.model.backend().clone();
            Some(KvCache::new(backend.as_ref(), &d.model.config, config.num_blocks, config.block_size)?)
        }
        None => None,
    };
    let mut state = EngineState {
        draft_cache,
        blocks: BlockManager::new(config.num_blocks, config.block_size),
        model,
        cache,
        tokenizer,
        config,
        waiting: VecDeque::new(),
        running: Vec::new(),
        queued: handle.queued.clone(),
        metrics: handle.metrics.clone(),
        broken: handle.broken.clone(),
        all_failed: false,
    };
    std::thread::Builder::new()
        .name("ferrum-engine".into())
        .spawn(move || state.run(rx))
        .map_err(|e| Error::Backend(format!("cannot start the engine thread: {e}")))?;
    Ok(handle)
}

struct EngineState {
    model: Model,
    cache: KvCache,
    tokenizer: Option<Arc<Tokenizer>>,
    config: EngineConfig,
    blocks: BlockManager,
    waiting: VecDeque<Sequence>,
    /// admission order: oldest first (the youngest is preempted first)
    running: Vec<Sequence>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    broken: Arc<OnceLock<String>>,
    /// whether every sequence of the last step failed, even alone
    all_failed: bool,
    /// the draft model's cache, laid out like `cache` (one block table for both)
    draft_cache: Option<KvCache>,
}

/// One sequence's share of a step: `take` tokens from position `computed`.
struct Planned {
    index: usize,
    take: usize,
}

/// What a step's forward pass returns for the rows to sample, in plan order.
enum Picked {
    /// Every row's logits, for the host sampler.
    Logits(Logits),
    /// Every row's argmax, picked on the device (all plain greedy).
    Ids(Vec<u32>),
}

/// Each constrained sequence's mask for this step, by running index.
type Masks = Vec<(usize, std::result::Result<TokenMask, String>)>;

/// The sequences a step finished and those it failed, by running index.
#[derive(Default)]
struct Outcome {
    finished: Vec<usize>,
    failed: Vec<(usize, String)>,
}

impl EngineState {
    fn run(&mut self, commands: Receiver<Command>) {
        loop {
            // block when idle; otherwise drain what arrived since the last step
            if self.running.is_empty() && self.waiting.is_empty() {
                match commands.recv() {
                    Ok(c) => self.apply(c),
                    Err(_) => return, // every handle is gone
                }
            }
            loop {
                match commands.try_recv() {
                    Ok(c) => self.apply(c),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if self.running.is_empty() && self.waiting.is_empty() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            let stepped = catch_unwind(AssertUnwindSafe(|| self.step()));
            let fatal = match stepped {
                Ok(()) => self.broken.get().cloned(),
                Err(panic) => Some(format!("the engine panicked: {}", panic_message(&*panic))),
            };
            if let Some(reason) = fatal {
                self.stop(reason);
                return;
            }
            self.publish_gauges();
        }
    }

    /// Why the engine cannot go on after this step, if it cannot.
    fn fatal(&self) -> Option<String> {
        if let Some(lost) = self.model.backend().lost() {
            return Some(format!("the {} backend cannot run: {lost}", self.model.backend().name()));
        }
        if !self.all_failed {
            return None;
        }
        // a bad request, or a backend that can run nothing?
        probe(self.model.backend().as_ref())
            .err()
            .map(|e| format!("the {} backend fails a trivial op: {e}", self.model.backend().name()))
    }

    fn mark_broken(&self, reason: &str) {
        if self.broken.set(reason.to_string()).is_ok() {
            eprintln!("ferrum engine stopped: {reason}");
        }
        Metrics::set(&self.metrics.healthy, 0);
    }

    /// Stops for good: every request gets `reason`, new ones are refused.
    fn stop(&mut self, reason: String) {
        self.mark_broken(&reason);
        let waiting: Vec<Sequence> = self.waiting.drain(..).collect();
        for seq in waiting.iter() {
            self.dequeue(seq);
        }
        for seq in self.running.drain(..).chain(waiting) {
            let _ = seq.events.send(Event::Error(reason.clone()));
            Metrics::add(&self.metrics.requests_server_error, 1);
        }
        self.publish_gauges();
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Submit(sequences) => self.waiting.extend(sequences),
            Command::Abort(id) => {
                if let Some(i) = self.running.iter().position(|s| s.id == id) {
                    let mut seq = self.running.remove(i);
                    seq.release(&mut self.blocks);
                    Metrics::add(&self.metrics.requests_aborted, 1);
                } else if let Some(i) = self.waiting.iter().position(|s| s.id == id)
                    && let Some(mut seq) = self.waiting.remove(i)
                {
                    self.dequeue(&seq);
                    seq.release(&mut self.blocks);
                    Metrics::add(&self.metrics.requests_aborted, 1);
                }
            }
        }
    }

    /// A waiting sequence leaves the queue (admitted or aborted) the first time.
    fn dequeue(&self, seq: &Sequence) {
        if !seq.prompt_counted {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn schedule(&mut self) -> Vec<Planned> {
        let mut budget = self.config.max_batch_tokens;
        let mut plan: Vec<Planned> = Vec::new();
        // running sequences first, oldest first
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            self.speculate(i, budget);
            let take = self.running[i].speculated.len().max(self.running[i].pending().min(budget));
            let positions = self.running[i].computed + take;
            if self.running[i].reserve(&mut self.blocks, positions) {
                plan.push(Planned { index: i, take });
                budget -= take;
                i += 1;
                continue;
            }
            // out of blocks: preempt the youngest running sequence (maybe this one)
            self.running[i].speculated.clear();
            let mut victim = self.running.pop().expect("i < len");
            victim.release(&mut self.blocks);
            Metrics::add(&self.metrics.preemptions, 1);
            plan.retain(|p| p.index < self.running.len());
            budget = self.config.max_batch_tokens - plan.iter().map(|p| p.take).sum::<usize>();
            self.waiting.push_front(victim);
        }
        // then admit waiting sequences while there is room
        while budget > 0 && self.running.len() < self.config.max_running {
            let Some(mut seq) = self.waiting.pop_front() else { break };
            if seq.blocks.is_empty() {
                seq.adopt_cached_prefix(&mut self.blocks);
            }
            let take = seq.pending().min(budget);
            if !seq.reserve(&mut self.blocks, seq.computed + take) {
                seq.release(&mut self.blocks);
                self.waiting.push_front(seq);
                break;
            }
            self.dequeue(&seq);
            if !seq.prompt_counted {
                seq.prompt_counted = true;
                Metrics::add(&self.metrics.prompt_tokens, seq.prompt_len as u64);
            }
            plan.push(Planned { index: self.running.len(), take });
            budget -= take;
            self.running.push(seq);
        }
        plan
    }

    /// Fills in the guesses running sequence `i` verifies this step, within
    /// `budget` tokens: a decoding sequence without a grammar or logprobs,
    /// when the lookup finds any (none otherwise).
    fn speculate(&mut self, i: usize, budget: usize) {
        let seq = &mut self.running[i];
        seq.speculated.clear();
        let Some(spec) = &self.config.speculation else { return };
        if seq.pending() != 1 || seq.constraint.is_some() || seq.request.logprobs.is_some() {
            return;
        }
        // the guesses and the token after them must fit the request and the context
        let room = (seq.request.max_tokens - seq.generated()).saturating_sub(1);
        let room = room.min(spec.tokens).min(budget - 1);
        if room == 0 {
            return;
        }
        // a draft model guesses `room` tokens in `draft_guesses`, before the forward pass
        let guesses = match self.draft_cache {
            Some(_) => vec![seq.tokens[seq.computed]; room],
            None => NgramProposer::new(spec).propose(&seq.tokens, room),
        };
        if !guesses.is_empty() {
            seq.speculated.push(seq.tokens[seq.computed]);
            seq.speculated.extend(guesses);
        }
    }

    /// The draft model's guesses for the sequences of `plan` that verify
    /// some this step, written into their `speculated` (on a failure of the
    /// draft model the placeholders stay: guesses that are merely unlikely).
    fn draft_guesses(&mut self, plan: &[Planned]) {
        let (Some(drafter), Some(cache)) = (&self.config.draft, &self.draft_cache) else { return };
        let drafting: Vec<usize> =
            plan.iter().map(|p| p.index).filter(|&i| !self.running[i].speculated.is_empty()).collect();
        if drafting.is_empty() {
            return;
        }
        let seqs: Vec<DraftSeq<'_>> = drafting
            .iter()
            .map(|&i| {
                let s = &self.running[i];
                DraftSeq {
                    tokens: &s.tokens,
                    cached: s.draft_cached,
                    block_table: &s.blocks,
                    guesses: s.speculated.len() - 1,
                }
            })
            .collect();
        let drafted = catch_unwind(AssertUnwindSafe(|| drafter.draft(cache, &seqs)));
        drop(seqs);
        if let Ok(Ok(guesses)) = drafted {
            for (i, g) in drafting.into_iter().zip(guesses) {
                let s = &mut self.running[i];
                s.speculated.truncate(1);
                s.speculated.extend(g);
                s.drafted = true;
            }
        }
    }

    fn step(&mut self) {
        let started = Instant::now();
        let plan = self.schedule();
        if plan.is_empty() {
            if self.running.is_empty()
                && let Some(mut seq) = self.waiting.pop_front()
            {
                // nothing runs and the head still does not fit: it never will
                self.dequeue(&seq);
                seq.release(&mut self.blocks);
                let _ = seq.events.send(Event::Error("the request does not fit in the KV cache".into()));
                Metrics::add(&self.metrics.requests_server_error, 1);
            }
            return;
        }
        // a sequence samples when its step reaches its last token (a step that
        // verifies guesses goes past it)
        let wants: Vec<bool> = plan
            .iter()
            .map(|p| self.running[p.index].computed + p.take >= self.running[p.index].tokens.len())
            .collect();
        // ids picked on the device when every sampled sequence is plain greedy
        // or plain temperature sampling and wants no logprobs; otherwise the
        // logits come back for the samplers. Drawn once, so a rerun draws the same.
        let on_device = plan.iter().zip(&wants).filter(|(_, want)| **want).all(|(p, _)| {
            let s = &self.running[p.index];
            s.sampler.params.is_device_pickable()
                && s.request.logprobs.is_none()
                && s.constraint.is_none()
                && (s.speculated.is_empty() || s.sampler.params.is_plain_greedy())
        });
        // one pick per logit row: a verifying sequence has one per guess and one more
        let picks: Vec<Vec<DevicePick>> = plan
            .iter()
            .zip(&wants)
            .map(|(p, &want)| {
                let s = &mut self.running[p.index];
                match (on_device && want, s.speculated.len()) {
                    (false, _) => Vec::new(),
                    (true, 0) => vec![s.sampler.device_pick()],
                    (true, n) => vec![DevicePick::GREEDY; n],
                }
            })
            .collect();
        let mut outcome = Outcome::default();
        self.draft_guesses(&plan);
        // the grammars' masks are computed on another thread while the
        // forward pass runs
        let mut constrained: Vec<(usize, Constraint)> = plan
            .iter()
            .zip(&wants)
            .filter(|(_, want)| **want)
            .filter_map(|(p, _)| self.running[p.index].constraint.take().map(|c| (p.index, c)))
            .collect();
        let (forward, masks) = std::thread::scope(|scope| {
            let masker = (!constrained.is_empty()).then(|| {
                scope.spawn(|| {
                    let started = Instant::now();
                    let masks: Vec<_> = constrained.iter_mut().map(|(i, c)| (*i, c.allowed())).collect();
                    (masks, started.elapsed())
                })
            });
            let forward = self.forward(&plan, &wants, on_device, &picks);
            let finished = Instant::now();
            let masks = masker.map(|m| {
                let (masks, took) = m.join().unwrap_or_else(|_| (Vec::new(), Default::default()));
                self.metrics.grammar_mask.observe(took.as_secs_f64());
                self.metrics.grammar_wait.observe(finished.elapsed().as_secs_f64());
                masks
            });
            (forward, masks.unwrap_or_default())
        });
        for (i, c) in constrained {
            self.running[i].constraint = Some(c);
        }
        let masks: Masks = masks.into_iter().map(|(i, m)| (i, m.map_err(|e| e.to_string()))).collect();
        match forward {
            Ok(picked) => self.advance(&plan, &wants, &picked, &masks, &mut outcome),
            Err(e) if self.model.backend().lost().is_some() => {
                outcome.failed.extend(plan.iter().map(|p| (p.index, e.clone())));
            }
            Err(_) => {
                // find the sequences that broke the step: each alone (a
                // transient fault costs one rerun)
                Metrics::add(&self.metrics.failed_steps, 1);
                for (i, p) in plan.iter().enumerate() {
                    let (one, want) = (std::slice::from_ref(p), &wants[i..=i]);
                    match self.forward(one, want, on_device, &picks[i..=i]) {
                        Ok(picked) => self.advance(one, want, &picked, &masks, &mut outcome),
                        Err(e) => outcome.failed.push((p.index, e)),
                    }
                }
            }
        }
        self.all_failed = outcome.failed.len() == plan.len();
        if let Some(reason) = self.fatal() {
            // said before the failed requests hear of it
            self.mark_broken(&reason);
        }
        self.retire(outcome);
        self.metrics.step.observe(started.elapsed().as_secs_f64());
    }

    /// One forward pass over `plan`; an error or a panic comes back as its
    /// message. Nothing of the sequences changes, so it can be rerun.
    fn forward(
        &self,
        plan: &[Planned],
        wants: &[bool],
        on_device: bool,
        picks: &[Vec<DevicePick>],
    ) -> std::result::Result<Picked, String> {
        let picks: Vec<DevicePick> = picks.iter().flatten().copied().collect();
        let chunks: Vec<SeqChunk<'_>> = plan
            .iter()
            .zip(wants)
            .map(|(p, &want)| {
                let s = &self.running[p.index];
                let logits = match (want, s.speculated.is_empty()) {
                    (false, _) => LogitsWanted::None,
                    (true, true) => LogitsWanted::Last,
                    (true, false) => LogitsWanted::All, // a row for each guess, one more
                };
                SeqChunk { tokens: s.step_tokens(p.take), start_pos: s.computed, block_table: &s.blocks, logits }
            })
            .collect();
        let run = || {
            if on_device {
                self.model.forward_picked(&chunks, &self.cache, &picks).map(Picked::Ids)
            } else {
                self.model.forward(&chunks, &self.cache).map(Picked::Logits)
            }
        };
        match catch_unwind(AssertUnwindSafe(run)) {
            Ok(picked) => picked.map_err(|e| e.to_string()),
            Err(panic) => Err(format!("the forward pass panicked: {}", panic_message(&*panic))),
        }
    }

    /// Samples the rows of a successful forward pass over `plan` (within
    /// their grammars' `masks`, or verifying their guesses) and streams the
    /// tokens.
    fn advance(&mut self, plan: &[Planned], wants: &[bool], picked: &Picked, masks: &Masks, outcome: &mut Outcome) {
        let mut row = 0;
        for (p, &want) in plan.iter().zip(wants) {
            let seq = &mut self.running[p.index];
            if want && !seq.speculated.is_empty() {
                let guesses = std::mem::take(&mut seq.speculated).split_off(1);
                let rows = guesses.len() + 1;
                let tokens = match picked {
                    Picked::Ids(ids) => speculative::accept_ids(&mut seq.sampler, &guesses, &ids[row..row + rows]),
                    Picked::Logits(logits) => speculative::accept(&mut seq.sampler, &guesses, |i| logits.row(row + i)),
                };
                row += rows;
                Metrics::add(&self.metrics.spec_guessed_tokens, guesses.len() as u64);
                Metrics::add(&self.metrics.spec_accepted_tokens, tokens.len() as u64 - 1);
                Metrics::add(&self.metrics.spec_steps, 1);
                let (computed, len) = (seq.computed, seq.tokens.len());
                if std::mem::take(&mut seq.drafted) {
                    seq.draft_cached = Drafter::kept(len, guesses.len(), tokens.len() - 1);
                }
                for &token in &tokens {
                    if self.emit(p.index, token, None, outcome) {
                        break;
                    }
                }
                // in the cache: the pending token and the guesses kept
                let seq = &mut self.running[p.index];
                seq.computed = (computed + tokens.len()).min(seq.tokens.len());
                seq.register_full_blocks(&mut self.blocks);
                continue;
            }
            seq.computed += p.take;
            seq.register_full_blocks(&mut self.blocks);
            if !want {
                continue;
            }
            let mask = masks.iter().find(|(i, _)| *i == p.index).map(|(_, m)| m);
            let (token, logprobs) = match (picked, mask) {
                (_, Some(Err(e))) => {
                    outcome.failed.push((p.index, e.clone()));
                    row += 1;
                    continue;
                }
                (Picked::Ids(ids), _) => (seq.sampler.record(ids[row]), None),
                (Picked::Logits(logits), mask) => {
                    let logits_row = logits.row(row);
                    let token = match mask {
                        Some(Ok(m)) => seq.sampler.sample_within(logits_row, m),
                        _ => seq.sampler.sample(logits_row),
                    };
                    (token, seq.request.logprobs.map(|n| token_logprobs(logits_row, token, n)))
                }
            };
            row += 1;
            if let Some(c) = seq.constraint.as_mut()
                && let Err(e) = c.accept(token)
            {
                outcome.failed.push((p.index, e.to_string()));
                continue;
            }
            self.emit(p.index, token, logprobs, outcome);
        }
    }

    /// Streams running sequence `index`'s new token; true when that ends
    /// the sequence (finished, or its client gone).
    fn emit(&mut self, index: usize, token: u32, logprobs: Option<TokenLogprobs>, outcome: &mut Outcome) -> bool {
        let seq = &mut self.running[index];
        let (events, done) = seq.push_token(token, logprobs, self.tokenizer.as_ref());
        let now = Instant::now();
        match seq.last_token_at {
            None => self.metrics.ttft.observe(now.duration_since(seq.arrived).as_secs_f64()),
            Some(t) => self.metrics.inter_token.observe(now.duration_since(t).as_secs_f64()),
        }
        seq.last_token_at = Some(now);
        Metrics::add(&self.metrics.generation_tokens, 1);
        let mut gone = false;
        for e in events {
            gone |= seq.events.send(e).is_err();
        }
        if gone {
            Metrics::add(&self.metrics.requests_aborted, 1);
            outcome.finished.push(index);
        } else if done.is_some() {
            self.metrics.e2e.observe(seq.arrived.elapsed().as_secs_f64());
            outcome.finished.push(index);
        }
        gone || done.is_some()
    }

    /// Removes the finished and failed sequences, freeing their blocks; the
    /// failed ones get their error.
    fn retire(&mut self, outcome: Outcome) {
        let mut gone: Vec<(usize, Option<String>)> = outcome.finished.into_iter().map(|i| (i, None)).collect();
        gone.extend(outcome.failed.into_iter().map(|(i, e)| (i, Some(e))));
        // highest index first, so the lower ones stay valid
        gone.sort_unstable_by_key(|g| std::cmp::Reverse(g.0));
        for (i, error) in gone {
            let mut seq = self.running.remove(i);
            seq.release(&mut self.blocks);
            if let Some(e) = error {
                let _ = seq.events.send(Event::Error(e));
                Metrics::add(&self.metrics.requests_server_error, 1);
            }
        }
    }

    fn publish_gauges(&self) {
        let m = &self.metrics;
        Metrics::set(&m.queue_depth, self.waiting.len() as u64);
        Metrics::set(&m.running, self.running.len() as u64);
        Metrics::set(&m.kv_blocks_used, self.blocks.used_count() as u64);
        Metrics::set(&m.kv_blocks_free, self.blocks.free_count() as u64);
        Metrics::set(&m.prefix_cache_hit_blocks, self.blocks.prefix_hit_blocks);
        Metrics::set(&m.prefix_cache_query_blocks, self.blocks.prefix_query_blocks);
    }
}

/// 1 + 2 on the backend, which must give 3.
fn probe(backend: &dyn Backend) -> Result<()> {
    let (a, b) = (backend.upload_f32(&[1, 1], &[1.0])?, backend.upload_f32(&[1, 1], &[2.0])?);
    let sum = backend.read_f32(&backend.run(&Op::Add(Add), &[&a, &b])?)?;
    if sum != [3.0] {
        return Err(Error::Backend(format!("1 + 2 gave {sum:?}")));
    }
    Ok(())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".into(),
    }
}

/// The chosen token's logprob under the model and the `n` most likely.
fn token_logprobs(logits: &[f32], token: u32, n: usize) -> TokenLogprobs {
    let logprob = log_softmax_at(logits, token as usize) as f32;
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let n = n.min(order.len());
    order.select_nth_unstable_by(n.saturating_sub(1), |a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    let mut top: Vec<(u32, f32)> = order[..n].iter().map(|&t| (t, log_softmax_at(logits, t as usize) as f32)).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    TokenLogprobs { logprob, top }
}
