//! Generating one sequence: prefill the prompt, then decode token by token
//! through the paged KV cache, streaming text that is complete UTF-8 and
//! stopping on EOS ids, stop strings or the token budget.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::kv_cache::{BlockTable, KvCache, PagedKv};
use crate::model::{LogitsWanted, Model, SeqChunk};
use crate::sampler::{DevicePick, Sampler, SamplingParams};
use crate::speculative::{self, DraftSeq, Drafter, NgramProposer, Proposer, Speculation};
use crate::tokenizer::{IncrementalDecoder, Tokenizer};

pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// What `generation_config.json` suggests; command-line flags override it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationDefaults {
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub max_new_tokens: Option<usize>,
    pub eos_token_ids: Vec<u32>,
}

impl GenerationDefaults {
    /// Missing file: no defaults. Malformed file: an error.
    pub fn from_file(path: &Path) -> Result<Self> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(Self::default());
        };
        let bad = |msg: String| Error::Config { path: path.to_path_buf(), msg };
        let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let f = |k: &str| v.get(k).and_then(Value::as_f64).map(|x| x as f32);
        Ok(GenerationDefaults {
            do_sample: v.get("do_sample").and_then(Value::as_bool),
            temperature: f("temperature"),
            top_k: v.get("top_k").and_then(Value::as_u64).map(|x| x as usize),
            top_p: f("top_p"),
            min_p: f("min_p"),
            repetition_penalty: f("repetition_penalty"),
            max_new_tokens: v.get("max_new_tokens").and_then(Value::as_u64).map(|x| x as usize),
            eos_token_ids: crate::config::token_ids(v.get("eos_token_id"))
                .map_err(|m| bad(format!("eos_token_id: {m}")))?,
        })
    }

    /// Sampling parameters as transformers would use them.
    pub fn sampling(&self) -> SamplingParams {
        let mut p = SamplingParams::default();
        if self.do_sample == Some(true) {
            p.temperature = self.temperature.unwrap_or(1.0);
            p.top_k = self.top_k.unwrap_or(0);
            p.top_p = self.top_p.unwrap_or(1.0);
            p.min_p = self.min_p.unwrap_or(0.0);
        }
        p.repetition_penalty = self.repetition_penalty.unwrap_or(1.0);
        p
    }
}

#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub eos_token_ids: Vec<u32>,
    pub stop_strings: Vec<String>,
    /// Guess tokens by prompt lookup and verify them in one pass each step.
    pub speculation: Option<Speculation>,
    /// With `speculation`, guess with this smaller model instead of by lookup.
    pub draft: Option<Drafter>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An EOS id or a stop string.
    Stop,
    /// The token budget ran out.
    Length,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
    /// Decode steps (forward passes after the prefill).
    pub decode_steps: usize,
    /// Tokens guessed, and how many of them the model kept.
    pub guessed: usize,
    pub accepted: usize,
}

impl Generation {
    /// Decode speed: tokens after the first over the time they took.
    pub fn decode_tokens_per_sec(&self) -> f64 {
        let n = self.tokens.len().saturating_sub(1);
        if self.decode_secs > 0.0 { n as f64 / self.decode_secs } else { 0.0 }
    }

    pub fn prefill_tokens_per_sec(&self) -> f64 {
        if self.prefill_secs > 0.0 { self.prompt_tokens as f64 / self.prefill_secs } else { 0.0 }
    }
}

/// Generates after `prompt`. With a tokenizer, text is passed to `on_text`
/// as soon as it is complete and known not to start a stop string.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    tokenizer: Option<&Tokenizer>,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(Error::Request("the prompt is empty".into()));
    }
    opts.sampling.validate().map_err(Error::Request)?;
    if !opts.stop_strings.is_empty() && tokenizer.is_none() {
        return Err(Error::Tokenizer("stop strings need a tokenizer".into()));
    }
    let total = prompt.len() + opts.max_tokens;
    let limit = model.config.max_position_embeddings;
    if total > limit {
        return Err(Error::Request(format!(
            "prompt ({}) + max tokens ({}) = {total} exceeds the model's context of {limit}",
            prompt.len(),
            opts.max_tokens
        )));
    }
    let backend: &Arc<_> = model.backend();
    let mut kv = PagedKv::for_tokens(backend, &model.config, total, DEFAULT_BLOCK_SIZE)?;
    let mut table = BlockTable::default();
    table.reserve(&mut kv.pool, total, DEFAULT_BLOCK_SIZE)?;

    let mut sampler = Sampler::new(opts.sampling.clone(), prompt);
    let mut detok = IncrementalDecoder::default();
    let mut stops = StopMatcher::new(opts.stop_strings.clone());
    let mut out = Generation {
        tokens: Vec::new(),
        text: String::new(),
        finish: FinishReason::Length,
        prompt_tokens: prompt.len(),
        prefill_secs: 0.0,
        decode_secs: 0.0,
        decode_steps: 0,
        guessed: 0,
        accepted: 0,
    };
    if let Some(spec) = &opts.speculation {
        spec.validate().map_err(Error::Request)?;
    }
    let proposer = opts.speculation.as_ref().map(NgramProposer::new);
    let guesses_per_step = opts.speculation.map_or(0, |s| s.tokens);
    // a draft model's cache, laid out like the target's: one block table for both
    let drafter = opts.draft.as_ref().filter(|_| opts.speculation.is_some());
    let draft_cache = match drafter {
        Some(d) => {
            Some(KvCache::new(d.model.backend().as_ref(), &d.model.config, kv.cache.num_blocks, kv.cache.block_size)?)
        }
        None => None,
    };
    let mut draft_cached = 0;
    // the token is picked on the device and only its id comes back when
    // sampling is plain greedy or plain temperature (with guesses: greedy)
    let on_device = opts.sampling.is_device_pickable();
    let started = Instant::now();
    let mut context: Vec<u32> = prompt.to_vec();
    let mut decode_started = None;
    // each pass: the tokens not yet in the cache (the prompt, then the last
    // token) and any guesses after them
    let mut fed = prompt.len();
    while out.tokens.len() < opts.max_tokens {
        let start_pos = context.len() - fed;
        let room = opts.max_tokens - out.tokens.len() - 1; // guesses must fit the budget
        let want = guesses_per_step.min(room);
        let guesses = match (&proposer, drafter, &draft_cache) {
            (Some(_), Some(d), Some(cache)) if decode_started.is_some() && want > 0 => {
                let seq =
                    DraftSeq { tokens: &context, cached: draft_cached, block_table: table.blocks(), guesses: want };
                d.draft(cache, &[seq])?.pop().unwrap_or_default()
            }
            (Some(p), None, _) if decode_started.is_some() => p.propose(&context, want),
            _ => Vec::new(),
        };
        let mut tokens = context[start_pos..].to_vec();
        tokens.extend(&guesses);
        let logits = if guesses.is_empty() { LogitsWanted::Last } else { LogitsWanted::All };
        let chunk = SeqChunk { tokens: &tokens, start_pos, block_table: table.blocks(), logits };
        let picked: Vec<u32> = if guesses.is_empty() {
            vec![if on_device {
                let pick = sampler.device_pick();
                sampler.record(model.forward_picked(&[chunk], &kv.cache, &[pick])?[0])
            } else {
                sampler.sample(model.forward(&[chunk], &kv.cache)?.row(0))
            }]
        } else if opts.sampling.is_plain_greedy() {
            let ids = model.forward_picked(&[chunk], &kv.cache, &vec![DevicePick::GREEDY; guesses.len() + 1])?;
            speculative::accept_ids(&mut sampler, &guesses, &ids)
        } else {
            let logits = model.forward(&[chunk], &kv.cache)?;
            speculative::accept(&mut sampler, &guesses, |i| logits.row(i))
        };
        match decode_started {
            None => {
                out.prefill_secs = started.elapsed().as_secs_f64();
                decode_started = Some(Instant::now());
            }
            Some(_) => out.decode_steps += 1,
        }
        out.guessed += guesses.len();
        out.accepted += picked.len() - 1;
        if !guesses.is_empty() {
            draft_cached = Drafter::kept(context.len(), guesses.len(), picked.len() - 1);
        }
        // the cache now holds every fed token but the last picked one's
        fed = 1;
        for token in picked {
            if opts.eos_token_ids.contains(&token) {
                out.finish = FinishReason::Stop;
                break;
            }
            out.tokens.push(token);
            context.push(token);
            let piece = match tokenizer {
                Some(t) => detok.step(t, &out.tokens, true)?,
                None => None,
            };
            if let Some(piece) = piece {
                let (text, stopped) = stops.push(&piece);
                out.text.push_str(&text);
                on_text(&text);
                if stopped {
                    out.finish = FinishReason::Stop;
                    break;
                }
            }
            if out.tokens.len() >= opts.max_tokens {
                break;
            }
        }
        if out.finish == FinishReason::Stop {
            break;
        }
    }
    if out.finish == FinishReason::Length || !stops.stopped {
        let rest = stops.flush();
        out.text.push_str(&rest);
        on_text(&rest);
    }
    out.decode_secs = decode_started.map_or(0.0, |d| d.elapsed().as_secs_f64());
    table.release(&mut kv.pool);
    Ok(out)
}

/// Holds back text that could be the start of a stop string, and cuts the
/// output where a stop string appears (the stop string itself is dropped).
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
            stopped: false,
        }
    }

    /// Adds text; returns what may be shown now, and whether a stop string was hit.
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        let first_stop = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min();
        if let Some(at) = first_stop {
            self.stopped = true;
            let shown = self.pending[..at].to_string();
            self.pending.clear();
            return (shown, true);
        }
        // keep the longest suffix that is a proper prefix of some stop string
        let keep = self
            .stops
            .iter()
            .flat_map(|s| (1..s.len()).filter(|&n| s.is_char_boundary(n)).map(move |n| &s[..n]))
            .filter(|prefix| self.pending.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - keep;
        let shown = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (shown, false)
    }

    /// Releases held-back text at the end of generation.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_split_across_pieces() {
        let mut m = StopMatcher::new(vec!["\nUser:".into()]);
        assert_eq!(m.push("Hello"), ("Hello".into(), false));
        assert_eq!(m.push(" there\nUs"), (" there".into(), false));
        assert_eq!(m.push("er: hi"), (String::new(), true));
    }

    #[test]
    fn held_back_text_is_released_when_it_cannot_stop() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("the E"), ("the ".into(), false));
        assert_eq!(m.push("ND"), (String::new(), true));
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("the E"), ("the ".into(), false));
        assert_eq!(m.push("nd"), ("End".into(), false));
        assert_eq!(m.push("E"), (String::new(), false));
        assert_eq!(m.flush(), "E");
    }

    #[test]
    fn multibyte_stop_strings() {
        let mut m = StopMatcher::new(vec!["é!".into()]);
        assert_eq!(m.push("caf"), ("caf".into(), false));
        assert_eq!(m.push("é"), (String::new(), false));
        assert_eq!(m.push("!"), (String::new(), true));
    }
}
