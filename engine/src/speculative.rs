//! Speculative decoding: guess the next few tokens cheaply, then run them
//! through the model in one forward pass (the pending token and the k
//! guesses, logits at every position) and keep the longest prefix the model
//! agrees with, plus one token of the model's own. A decode step that costs
//! one pass then yields between 1 and k + 1 tokens.
//!
//! The guesses come from a [`Proposer`]; here, prompt lookup (n-gram):
//! the tokens that followed the most recent earlier occurrence of the
//! sequence's last n tokens, which pays off when the answer repeats its
//! input (summaries, code edits, extraction). It needs no second model. A
//! draft model (or DeepSeek's multi-token-prediction layer) is another
//! proposer with the same contract.
//!
//! [`accept`] keeps exactly the target model's distribution: greedy output
//! is token-identical to decoding without speculation, and sampled output
//! follows the same distribution (`Sampler::verify`: a guess is kept with
//! the probability the model gives it, else the token is drawn from the
//! model's distribution without it).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::model::{LogitsWanted, Model, SeqChunk};
use crate::sampler::Sampler;

/// Speculation settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Speculation {
    /// Tokens guessed per step (k).
    pub tokens: usize,
    /// Longest and shortest suffix looked up (n-gram sizes).
    pub ngram_max: usize,
    pub ngram_min: usize,
}

impl Default for Speculation {
    fn default() -> Self {
        Speculation { tokens: 4, ngram_max: 3, ngram_min: 1 }
    }
}

impl Speculation {
    pub fn validate(&self) -> Result<(), String> {
        if self.tokens == 0 || self.tokens > 32 {
            return Err(format!("speculative tokens must be in 1..=32, got {}", self.tokens));
        }
        if self.ngram_min == 0 || self.ngram_min > self.ngram_max {
            return Err(format!(
                "n-gram sizes must satisfy 1 <= min <= max, got {}..={}",
                self.ngram_min, self.ngram_max
            ));
        }
        Ok(())
    }
}

/// What guesses the next tokens of a sequence.
pub trait Proposer {
    /// Up to `k` tokens likely to follow `tokens` (prompt and output so far);
    /// empty when there is no good guess (the step is then a plain decode).
    fn propose(&self, tokens: &[u32], k: usize) -> Vec<u32>;
}

/// Prompt lookup: the longest suffix of `ngram_max` down to `ngram_min`
/// tokens that occurred before, and the tokens that followed its most
/// recent earlier occurrence.
#[derive(Clone, Copy, Debug)]
pub struct NgramProposer {
    pub max: usize,
    pub min: usize,
}

impl NgramProposer {
    pub fn new(spec: &Speculation) -> Self {
        NgramProposer { max: spec.ngram_max, min: spec.ngram_min }
    }
}

impl Proposer for NgramProposer {
    fn propose(&self, tokens: &[u32], k: usize) -> Vec<u32> {
        let len = tokens.len();
        for n in (self.min..=self.max.min(len.saturating_sub(1))).rev() {
            let suffix = &tokens[len - n..];
            // the most recent earlier occurrence with something after it
            let found = (0..len - n).rev().find(|&start| &tokens[start..start + n] == suffix);
            if let Some(start) = found {
                let after = start + n;
                return tokens[after..(after + k).min(len)].to_vec();
            }
        }
        Vec::new()
    }
}

/// A smaller model of the same vocabulary that guesses by greedy decoding.
/// Its KV cache is laid out like the target's (same block size and count),
/// so a sequence's block table serves both and the drafter keeps no block
/// bookkeeping: each sequence only says how many of its tokens the draft
/// cache holds.
#[derive(Clone)]
pub struct Drafter {
    pub model: Arc<Model>,
}

impl std::fmt::Debug for Drafter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Drafter({})", self.model.config.architecture.hf_name())
    }
}

/// One sequence to draft for.
#[derive(Clone, Copy, Debug)]
pub struct DraftSeq<'a> {
    /// Prompt and output so far; the last token is not in either cache yet.
    pub tokens: &'a [u32],
    /// How many of `tokens` the draft cache holds (a prefix).
    pub cached: usize,
    /// Its block table, covering `tokens.len() + guesses - 1` positions.
    pub block_table: &'a [u32],
    /// Tokens to guess (at least 1).
    pub guesses: usize,
}

impl Drafter {
    /// Checks the draft model can guess for `target`: the same vocabulary.
    pub fn new(model: Arc<Model>, target: &Model) -> Result<Self> {
        if model.config.vocab_size != target.config.vocab_size {
            return Err(Error::Request(format!(
                "the draft model's vocabulary has {} tokens, the model's {}: they must share a tokenizer",
                model.config.vocab_size, target.config.vocab_size
            )));
        }
        Ok(Drafter { model })
    }

    /// Each sequence's guesses, batched: one pass catches each draft cache up
    /// and gives the first guess, then one pass per further guess. After it,
    /// the draft cache holds the tokens and every guess but the last:
    /// `tokens.len() + guesses - 1` (see [`Drafter::kept`]).
    pub fn draft(&self, cache: &KvCache, seqs: &[DraftSeq<'_>]) -> Result<Vec<Vec<u32>>> {
        let mut guesses: Vec<Vec<u32>> = vec![Vec::new(); seqs.len()];
        let rounds = seqs.iter().map(|s| s.guesses).max().unwrap_or(0);
        for round in 0..rounds {
            let active: Vec<usize> = (0..seqs.len()).filter(|&i| seqs[i].guesses > round).collect();
            if round == 0 {
                // catching up may rewrite prefix blocks sequences share: a
                // slot is written once per pass, so those go in later passes
                for batch in disjoint_writes(seqs, &active, cache.block_size) {
                    self.pass(cache, seqs, &batch, 0, &mut guesses)?;
                }
            } else {
                self.pass(cache, seqs, &active, round, &mut guesses)?;
            }
        }
        Ok(guesses)
    }

    /// One batched pass of drafting round `round` for sequences `active`.
    fn pass(
        &self,
        cache: &KvCache,
        seqs: &[DraftSeq<'_>],
        active: &[usize],
        round: usize,
        guesses: &mut [Vec<u32>],
    ) -> Result<()> {
        {
            let chunks: Vec<SeqChunk<'_>> = active
                .iter()
                .map(|&i| {
                    let s = &seqs[i];
                    match round {
                        // the tokens the draft cache lacks, up to the last
                        0 => SeqChunk {
                            tokens: &s.tokens[s.cached..],
                            start_pos: s.cached,
                            block_table: s.block_table,
                            logits: LogitsWanted::Last,
                        },
                        _ => SeqChunk {
                            tokens: &guesses[i][round - 1..round],
                            start_pos: s.tokens.len() + round - 1,
                            block_table: s.block_table,
                            logits: LogitsWanted::Last,
                        },
                    }
                })
                .collect();
            let picked = self.model.forward_greedy(&chunks, cache)?;
            drop(chunks);
            for (&i, token) in active.iter().zip(picked) {
                guesses[i].push(token);
            }
        }
        Ok(())
    }

    /// How many tokens the draft cache still holds correctly after a step
    /// that drafted `guesses` after `len` tokens and kept `kept` of them.
    pub fn kept(len: usize, guesses: usize, kept: usize) -> usize {
        len + kept.min(guesses.saturating_sub(1))
    }
}

/// `active` split into batches in which no two sequences write a block in
/// common while catching up (positions `cached..tokens.len()`).
fn disjoint_writes(seqs: &[DraftSeq<'_>], active: &[usize], block_size: usize) -> Vec<Vec<usize>> {
    let written = |s: &DraftSeq<'_>| -> Vec<u32> {
        let blocks = s.cached / block_size..s.tokens.len().div_ceil(block_size);
        blocks.filter_map(|b| s.block_table.get(b).copied()).collect()
    };
    let mut batches: Vec<(Vec<usize>, std::collections::HashSet<u32>)> = Vec::new();
    for &i in active {
        let mine = written(&seqs[i]);
        match batches.iter_mut().find(|(_, taken)| mine.iter().all(|b| !taken.contains(b))) {
            Some((batch, taken)) => {
                batch.push(i);
                taken.extend(mine);
            }
            None => batches.push((vec![i], mine.into_iter().collect())),
        }
    }
    batches.into_iter().map(|(batch, _)| batch).collect()
}

/// The tokens one verification step yields: for each guess, the model's
/// logits at the position before it decide (`rows[i]` follows the pending
/// token and guesses `..i`); the first rejected guess is replaced by the
/// model's own token and ends the step; when all are kept, the last row
/// gives one more. Every token returned is recorded by `sampler`.
pub fn accept<'a>(sampler: &mut Sampler, guesses: &[u32], rows: impl Fn(usize) -> &'a [f32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(guesses.len() + 1);
    for (i, &guess) in guesses.iter().enumerate() {
        let (kept, token) = sampler.verify(rows(i), guess);
        out.push(token);
        if !kept {
            return out;
        }
    }
    out.push(sampler.sample(rows(guesses.len())));
    out
}

/// [`accept`] for greedy decoding when the device picked each row's
/// argmax (`ids[i]` for `rows[i]`): guesses are kept while they equal it.
pub fn accept_ids(sampler: &mut Sampler, guesses: &[u32], ids: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(guesses.len() + 1);
    for (i, &id) in ids.iter().enumerate().take(guesses.len() + 1) {
        out.push(sampler.record(id));
        if guesses.get(i) != Some(&id) {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplingParams;

    #[test]
    fn prompt_lookup_continues_the_latest_earlier_occurrence() {
        let p = NgramProposer { max: 3, min: 1 };
        // "1 2 3 4 ... 1 2 3": the suffix 1 2 3 was followed by 4 5 6
        assert_eq!(p.propose(&[1, 2, 3, 4, 5, 6, 9, 1, 2, 3], 3), [4, 5, 6]);
        // the most recent occurrence wins, and the guess stops at the end
        assert_eq!(p.propose(&[7, 8, 1, 7, 8, 2, 7, 8], 4), [2, 7, 8]);
        // no earlier occurrence of any suffix: no guess
        assert!(p.propose(&[1, 2, 3, 4], 3).is_empty());
        assert!(p.propose(&[5], 3).is_empty());
        // longer suffixes first: 2 3 matches at 5, though 3 alone is later at 8
        assert_eq!(p.propose(&[0, 2, 3, 9, 0, 2, 3, 7, 3, 5, 2, 3], 2), [7, 3]);
    }

    #[test]
    fn greedy_keeps_guesses_while_they_are_the_argmax() {
        let row = |best: usize| -> Vec<f32> { (0..8).map(|t| if t == best { 1.0 } else { 0.0 }).collect() };
        let rows = [row(4), row(5), row(1), row(7)];
        let mut s = Sampler::new(SamplingParams::default(), &[]);
        // guesses 4 5 6: the third is wrong, the model says 1
        assert_eq!(accept(&mut s, &[4, 5, 6], |i| &rows[i]), [4, 5, 1]);
        // all right: one more from the last row
        assert_eq!(accept(&mut s, &[4, 5, 1], |i| &rows[i]), [4, 5, 1, 7]);
        assert_eq!(accept_ids(&mut s, &[4, 5, 6], &[4, 5, 1, 7]), [4, 5, 1]);
        assert_eq!(accept_ids(&mut s, &[4, 5, 1], &[4, 5, 1, 7]), [4, 5, 1, 7]);
        assert_eq!(accept_ids(&mut s, &[9], &[3, 2]), [3]);
    }

    /// Sampling with a guess keeps the model's distribution: over many
    /// seeds, the token taken at a position with a (wrong or right) guess is
    /// distributed as the model's softmax says (chi-square, 3 degrees of freedom).
    #[test]
    fn sampled_verification_keeps_the_target_distribution() {
        let logits = [1.0f32, 0.5, 0.0, -1.0];
        let probs = crate::sampler::softmax(&logits);
        let n = 40_000;
        for guess in [0u32, 2, 3] {
            let mut counts = [0usize; 4];
            for seed in 0..n {
                let params = SamplingParams { temperature: 1.0, seed: seed as u64, ..Default::default() };
                let mut s = Sampler::new(params, &[]);
                let (_, token) = s.verify(&logits, guess);
                counts[token as usize] += 1;
            }
            let chi2: f64 = counts
                .iter()
                .zip(&probs)
                .map(|(&c, &p)| {
                    let e = p as f64 * n as f64;
                    (c as f64 - e).powi(2) / e
                })
                .sum();
            // 3 degrees of freedom: P(chi2 > 16.27) = 0.001
            assert!(chi2 < 16.27, "guess {guess}: counts {counts:?}, probs {probs:?}, chi2 {chi2:.2}");
        }
    }
}
