//! Perplexity of a model on a token sequence, llama.cpp's `llama-perplexity`
//! style: the text is cut into windows of `ctx` tokens, each scored on its
//! own; position i of a window predicts token i + 1.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::logits::{LogitsMode, sequence_logits};
use crate::model::Model;

#[derive(Clone, Debug, PartialEq)]
pub struct PerplexityReport {
    pub perplexity: f64,
    /// Mean negative log-likelihood per scored token (nats).
    pub mean_nll: f64,
    pub scored_tokens: usize,
    pub windows: usize,
    pub ctx: usize,
    /// Prefill speed over all windows.
    pub tokens_per_sec: f64,
}

/// Scores the first `max_windows` (or all) whole windows of `ctx` tokens.
/// `on_window(done, total)` reports progress.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    ctx: usize,
    max_windows: Option<usize>,
    mut on_window: impl FnMut(usize, usize),
) -> Result<PerplexityReport> {
    if ctx < 2 {
        return Err(Error::Request(format!("a window of {ctx} tokens scores nothing; use --ctx 2 or more")));
    }
    let available = tokens.len() / ctx;
    let windows = max_windows.map_or(available, |m| m.min(available));
    if windows == 0 {
        return Err(Error::Request(format!("the text has {} tokens, fewer than one window of {ctx}", tokens.len())));
    }
    let started = Instant::now();
    let mut nll = 0.0f64;
    for w in 0..windows {
        let window = &tokens[w * ctx..(w + 1) * ctx];
        let logits = sequence_logits(model, window, LogitsMode::Prefill)?;
        for i in 0..ctx - 1 {
            nll -= log_softmax_at(logits.row(i), window[i + 1] as usize);
        }
        on_window(w + 1, windows);
    }
    let scored_tokens = windows * (ctx - 1);
    let mean_nll = nll / scored_tokens as f64;
    Ok(PerplexityReport {
        perplexity: mean_nll.exp(),
        mean_nll,
        scored_tokens,
        windows,
        ctx,
        tokens_per_sec: (windows * ctx) as f64 / started.elapsed().as_secs_f64(),
    })
}

/// log(softmax(logits)[target]), computed in f64.
pub fn log_softmax_at(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits[target] as f64 - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_of_uniform_logits_is_minus_log_n() {
        let v = log_softmax_at(&[3.0; 8], 5);
        assert!((v + 8f64.ln()).abs() < 1e-12);
    }
}
