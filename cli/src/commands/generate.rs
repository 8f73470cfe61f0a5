//! `ferrum generate`: complete a prompt, streaming text to stdout.

use std::io::Write;

use anyhow::{Result, bail};
use clap::Args;
use ferrum_engine::generate::{GenerateOptions, Generation, generate};

use crate::model_args::{Loaded, ModelArgs, SamplingArgs, TokenIds, parse_ids};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text (tokenised with the model's tokenizer, BOS added as it specifies).
    #[arg(long, conflicts_with = "prompt_ids", required_unless_present = "prompt_ids")]
    pub prompt: Option<String>,
    /// The prompt as token ids, e.g. 1,2,3 (works without a tokenizer).
    #[arg(long, value_parser = parse_ids)]
    pub prompt_ids: Option<TokenIds>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let loaded = args.model.load()?;
    let prompt = match (&args.prompt, &args.prompt_ids) {
        (Some(text), _) => loaded.source.tokenizer()?.encode(text, true)?,
        (None, Some(ids)) => ids.0.clone(),
        (None, None) => bail!("give --prompt or --prompt-ids"),
    };
    let opts = args.sampling.options(&args.model, &loaded)?;
    let out = stream(&loaded, &prompt, opts)?;
    println!();
    report(&out);
    Ok(())
}

/// Generates, printing text as it completes (token ids when there is no tokenizer).
pub fn stream(loaded: &Loaded, prompt: &[u32], mut opts: GenerateOptions) -> Result<Generation> {
    let context = loaded.model.config.max_position_embeddings;
    if prompt.len() >= context {
        bail!("the prompt has {} tokens; the model's context is {context}", prompt.len());
    }
    opts.max_tokens = opts.max_tokens.min(context - prompt.len());
    let mut stdout = std::io::stdout().lock();
    let out = generate(&loaded.model, prompt, &opts, loaded.source.tokenizer.as_ref(), |text| {
        // a closed stdout (e.g. piped to `head`) must not abort generation with a panic
        let _ = stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush());
    })?;
    if loaded.source.tokenizer.is_none() {
        let ids: Vec<String> = out.tokens.iter().map(u32::to_string).collect();
        let _ = write!(stdout, "{}", ids.join(" "));
    }
    Ok(out)
}

pub fn report(out: &Generation) {
    eprintln!(
        "[{} prompt tokens, {} generated ({:?}); prefill {:.1} tok/s, decode {:.1} tok/s]",
        out.prompt_tokens,
        out.tokens.len(),
        out.finish,
        out.prefill_tokens_per_sec(),
        out.decode_tokens_per_sec()
    );
    if out.guessed > 0 {
        eprintln!(
            "[speculation: {} of {} guesses kept ({:.0}%), {:.2} tokens per decode step]",
            out.accepted,
            out.guessed,
            100.0 * out.accepted as f64 / out.guessed as f64,
            out.tokens.len().saturating_sub(1) as f64 / out.decode_steps.max(1) as f64
        );
    }
}
