//! `ferrum eval`: perplexity of a model on a text file and, with `--quant
//! F1,F2,...`, of each quantized variant next to it: KL divergence from the
//! unquantized model, top-1 agreement, weight memory and prefill/decode
//! speed, all measured in the same run (llama-perplexity --kl-divergence
//! with throughput beside it).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ferrum_engine::eval::compare;
use ferrum_engine::memory::Workload;
use ferrum_engine::source::ModelSource;

use crate::model_args::{CacheDtype, ModelArgs};
use ferrum_engine::DType;
use ferrum_engine::quant::QuantFormat;

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A UTF-8 text file.
    #[arg(long)]
    pub text: PathBuf,
    /// Tokens per window; each window is scored on its own.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Score at most this many windows (default: all whole windows).
    #[arg(long)]
    pub windows: Option<usize>,
    /// Greedy tokens generated to time decoding.
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,
    /// KV cache dtypes to compare with an f32 cache (the reference then
    /// runs with f32): f16, bf16, fp8, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub kv_cache_dtypes: Vec<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let path = args.model.path()?;
    let source = ModelSource::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let text = std::fs::read_to_string(&args.text).with_context(|| format!("reading {}", args.text.display()))?;
    let tokens = source.tokenizer()?.encode(&text, false)?;
    // the unquantized model first: it is the reference for KL and agreement
    // (with an f32 cache when cache dtypes are compared)
    let kvs: Vec<DType> =
        args.kv_cache_dtypes.iter().map(|d| d.parse().map_err(anyhow::Error::msg)).collect::<Result<_>>()?;
    let reference_kv = if kvs.is_empty() { args.model.kv_cache_dtype } else { CacheDtype::Fixed(DType::F32) };
    let variants: Vec<(Option<QuantFormat>, CacheDtype)> = std::iter::once((None, reference_kv))
        .chain(args.model.quant.iter().map(|&q| (Some(q), reference_kv)))
        .chain(kvs.iter().map(|&d| (None, CacheDtype::Fixed(d))))
        .collect();
    // each window: a cache of ctx tokens, one pass, every row's logits
    let work = |c: &ferrum_engine::ModelConfig| Workload {
        kv_cache_bytes: c.kv_bytes_per_token() * args.ctx,
        step_tokens: args.ctx,
        logit_rows: args.ctx,
    };
    let models = variants
        .iter()
        .map(|&(q, kv)| args.model.load_variant_with_cache(&source, q, kv, work))
        .collect::<Result<Vec<_>>>()?;
    let bar = indicatif::ProgressBar::new(0).with_message("windows x variants");
    let refs: Vec<_> = models.iter().collect();
    let reports = compare(&refs, &tokens, args.ctx, args.windows, args.decode_tokens, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        true
    })?;
    bar.finish_and_clear();
    let name = |(q, kv): &(Option<QuantFormat>, CacheDtype)| match (q, kv) {
        (Some(q), _) => q.to_string(),
        (None, CacheDtype::Fixed(d)) if *kv != reference_kv => format!("kv {d}"),
        (None, _) => "unquantized".to_string(),
    };
    let windows = args.windows.map_or(tokens.len() / args.ctx, |w| w.min(tokens.len() / args.ctx));
    if args.json {
        let rows: Vec<_> = variants
            .iter()
            .zip(&reports)
            .zip(&models)
            .map(|((q, r), m)| {
                serde_json::json!({
                    "variant": name(q), "weight_bytes": m.weight_bytes(), "perplexity": r.perplexity,
                    "kl_mean": r.kl_mean, "kl_median": r.kl_median, "kl_p99": r.kl_p99, "kl_max": r.kl_max,
                    "top1_agreement": r.top1_agreement, "prefill_tokens_per_sec": r.prefill_tokens_per_sec,
                    "decode_tokens_per_sec": r.decode_tokens_per_sec,
                })
            })
            .collect();
        let json = serde_json::json!({
            "model": source.path, "text": args.text, "text_tokens": tokens.len(), "ctx": args.ctx,
            "windows": windows, "scored_tokens": windows * (args.ctx - 1),
            "backend": models[0].backend().name(), "variants": rows,
            // kept for single-model callers
            "perplexity": reports[0].perplexity, "prefill_tokens_per_sec": reports[0].prefill_tokens_per_sec,
        });
        writeln!(std::io::stdout(), "{json:#}")?;
        return Ok(());
    }
    println!(
        "text {} ({} tokens), {} windows x {} tokens, backend {}",
        args.text.display(),
        tokens.len(),
        windows,
        args.ctx,
        models[0].backend().name()
    );
    println!(
        "{:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>8}{:>11}{:>10}",
        "variant", "weights", "ppl", "KL mean", "KL med", "KL p99", "KL max", "top-1", "prefill/s", "decode/s"
    );
    for ((q, r), m) in variants.iter().zip(&reports).zip(&models) {
        println!(
            "{:<14}{:>7.1}MiB{:>10.4}{:>10.5}{:>10.5}{:>10.4}{:>10.3}{:>7.1}%{:>11.1}{:>10.1}",
            name(q),
            m.weight_bytes() as f64 / (1 << 20) as f64,
            r.perplexity,
            r.kl_mean,
            r.kl_median,
            r.kl_p99,
            r.kl_max,
            100.0 * r.top1_agreement,
            r.prefill_tokens_per_sec,
            r.decode_tokens_per_sec
        );
    }
    Ok(())
}
