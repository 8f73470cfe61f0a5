//! Perplexity of a model on a token sequence, llama.cpp's `llama-perplexity`
//! style: the text is cut into windows of `ctx` tokens, each scored on its
//! own; position i of a window predicts token i + 1. `compare` scores
//! several variants of one model (e.g. quantized ones) on the same windows
//! and measures how far each strays from the first: KL divergence of the
//! next-token distributions and top-1 agreement (`llama-perplexity
//! --kl-divergence`), with prefill and decode speed measured in the same run.

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

/// How one variant did against the reference (the first model given).
#[derive(Clone, Debug, PartialEq)]
pub struct VariantReport {
    pub perplexity: f64,
    /// KL(reference || variant) per scored position, nats.
    pub kl_mean: f64,
    pub kl_median: f64,
    pub kl_p99: f64,
    pub kl_max: f64,
    /// Fraction of positions whose most likely token equals the reference's.
    pub top1_agreement: f64,
    pub prefill_tokens_per_sec: f64,
    pub decode_tokens_per_sec: f64,
    /// KL of each scored token, in text order: window w's position i
    /// predicts token `w * ctx + i + 1` (the desktop app colours the text by it).
    pub kl_per_token: Vec<f64>,
}

/// Scores every model on the same windows; model 0 is the reference (its
/// KL is 0 and its agreement 1). `decode_tokens` greedy tokens measure
/// decode speed. `on_progress(done, total)` counts (window, model) passes
/// and says whether to go on (false: stop with an error, "cancelled").
pub fn compare(
    models: &[&Model],
    tokens: &[u32],
    ctx: usize,
    max_windows: Option<usize>,
    decode_tokens: usize,
    mut on_progress: impl FnMut(usize, usize) -> bool,
) -> Result<Vec<VariantReport>> {
    if ctx < 2 {
        return Err(Error::Request(format!("a window of {ctx} tokens scores nothing; use --ctx 2 or more")));
    }
    let windows = max_windows.map_or(tokens.len() / ctx, |m| m.min(tokens.len() / ctx));
    if windows == 0 || models.is_empty() {
        return Err(Error::Request(format!("the text has {} tokens, fewer than one window of {ctx}", tokens.len())));
    }
    let n = models.len();
    let mut nll = vec![0.0f64; n];
    let mut kl: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut agree = vec![0usize; n];
    let mut prefill_secs = vec![0.0f64; n];
    for w in 0..windows {
        let window = &tokens[w * ctx..(w + 1) * ctx];
        let mut reference: Option<(Vec<f64>, Vec<usize>)> = None; // log-probs and argmax per position
        for (m, model) in models.iter().enumerate() {
            let started = Instant::now();
            let logits = sequence_logits(model, window, LogitsMode::Prefill)?;
            prefill_secs[m] += started.elapsed().as_secs_f64();
            let vocab = logits.vocab;
            let mut logp = vec![0.0f64; (ctx - 1) * vocab];
            let mut top1 = vec![0usize; ctx - 1];
            for i in 0..ctx - 1 {
                let row = logits.row(i);
                let lp = &mut logp[i * vocab..(i + 1) * vocab];
                log_softmax_into(row, lp);
                nll[m] -= lp[window[i + 1] as usize];
                top1[i] = crate::sampler::argmax(row) as usize;
            }
            match &reference {
                None => reference = Some((logp, top1)),
                Some((ref_logp, ref_top1)) => {
                    for i in 0..ctx - 1 {
                        let (p, q) = (&ref_logp[i * vocab..(i + 1) * vocab], &logp[i * vocab..(i + 1) * vocab]);
                        kl[m].push(p.iter().zip(q).map(|(lp, lq)| lp.exp() * (lp - lq)).sum::<f64>().max(0.0));
                        agree[m] += usize::from(top1[i] == ref_top1[i]);
                    }
                }
            }
            if !on_progress(w * n + m + 1, windows * n) {
                return Err(Error::Request("cancelled".into()));
            }
        }
    }
    let scored = windows * (ctx - 1);
    let prompt = &tokens[..ctx.min(16)];
    models
        .iter()
        .enumerate()
        .map(|(m, model)| {
            let decode = crate::generate::generate(
                model,
                prompt,
                &crate::generate::GenerateOptions {
                    max_tokens: decode_tokens.max(2),
                    sampling: crate::sampler::SamplingParams::default(),
                    eos_token_ids: Vec::new(),
                    stop_strings: Vec::new(),
                    speculation: None,
                    draft: None,
                },
                None,
                |_| {},
            )?;
            let kl_per_token = if m == 0 { vec![0.0; scored] } else { std::mem::take(&mut kl[m]) };
            let mut k = kl_per_token.clone();
            k.sort_by(f64::total_cmp);
            let at = |q: f64| k[((q * (k.len() - 1) as f64).round() as usize).min(k.len() - 1)];
            Ok(VariantReport {
                perplexity: (nll[m] / scored as f64).exp(),
                kl_mean: k.iter().sum::<f64>() / k.len() as f64,
                kl_median: at(0.5),
                kl_p99: at(0.99),
                kl_max: k.last().copied().unwrap_or(0.0),
                top1_agreement: if m == 0 { 1.0 } else { agree[m] as f64 / scored as f64 },
                prefill_tokens_per_sec: (windows * ctx) as f64 / prefill_secs[m],
                decode_tokens_per_sec: decode.decode_tokens_per_sec(),
                kl_per_token,
            })
        })
        .collect()
}

/// log(softmax(logits)) in f64.
fn log_softmax_into(logits: &[f32], out: &mut [f64]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_sum = logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = l as f64 - max - log_sum;
    }
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
    fn a_model_compared_with_itself_has_zero_kl_and_full_agreement() {
        use std::sync::Arc;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama-notok");
        let a = Model::load(&dir, Arc::new(crate::CpuBackend::new())).unwrap();
        let b = Model::load(&dir, Arc::new(crate::CpuBackend::new())).unwrap();
        let tokens: Vec<u32> = (0..64).map(|i| (i * 7 % 300) as u32 + 4).collect();
        let r = compare(&[&a, &b], &tokens, 32, None, 4, |_, _| true).unwrap();
        assert_eq!(r[1].top1_agreement, 1.0);
        assert!(r[1].kl_max < 1e-9, "{:?}", r[1]);
        assert!((r[0].perplexity - r[1].perplexity).abs() < 1e-9);
        let single = perplexity(&a, &tokens, 32, None, |_, _| {}).unwrap();
        assert!((single.perplexity - r[0].perplexity).abs() < 1e-9);
    }

    #[test]
    fn log_softmax_of_uniform_logits_is_minus_log_n() {
        let v = log_softmax_at(&[3.0; 8], 5);
        assert!((v + 8f64.ln()).abs() < 1e-12);
    }
}
