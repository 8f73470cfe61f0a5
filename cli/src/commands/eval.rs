//! `ferrum eval`: perplexity of a model on a text file, with the prefill
//! speed measured in the same run.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ferrum_engine::eval::perplexity;

use crate::model_args::ModelArgs;

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
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let loaded = args.model.load()?;
    let text = std::fs::read_to_string(&args.text).with_context(|| format!("reading {}", args.text.display()))?;
    let tokens = loaded.source.tokenizer()?.encode(&text, false)?;
    let bar = indicatif::ProgressBar::new(0).with_message("windows");
    let report = perplexity(&loaded.model, &tokens, args.ctx, args.windows, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    if args.json {
        let json = serde_json::json!({
            "model": loaded.source.path,
            "text": args.text,
            "text_tokens": tokens.len(),
            "ctx": report.ctx,
            "windows": report.windows,
            "scored_tokens": report.scored_tokens,
            "perplexity": report.perplexity,
            "mean_nll": report.mean_nll,
            "prefill_tokens_per_sec": report.tokens_per_sec,
            "backend": loaded.model.backend().name(),
        });
        writeln!(std::io::stdout(), "{json:#}")?;
    } else {
        println!("text           {} ({} tokens)", args.text.display(), tokens.len());
        println!("windows        {} x {} tokens ({} scored)", report.windows, report.ctx, report.scored_tokens);
        println!("perplexity     {:.4}", report.perplexity);
        println!("prefill        {:.1} tok/s on {}", report.tokens_per_sec, loaded.model.backend().name());
    }
    Ok(())
}
