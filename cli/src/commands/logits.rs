//! `ferrum logits`: the logits of every position of a token sequence, to a
//! safetensors file, for comparison with other implementations.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ferrum_engine::loader::{StDtype, TensorToWrite, write_safetensors};
use ferrum_engine::logits::{LogitsMode, sequence_logits};

use crate::model_args::{CacheDtype, ModelArgs, TokenIds, parse_ids};
use ferrum_engine::DType;

#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Token ids, e.g. 1,2,3.
    #[arg(long, value_parser = parse_ids)]
    pub tokens: TokenIds,
    /// Output file; gets tensor `logits`, f32 [tokens, vocab].
    #[arg(long)]
    pub out: PathBuf,
    /// prefill: one forward pass; decode: one token at a time through the KV cache.
    #[arg(long, default_value = "prefill")]
    pub mode: LogitsMode,
}

pub fn run(args: &LogitsArgs) -> Result<()> {
    // logits are for checking against a reference: an f32 cache unless asked
    let mut model = args.model.clone();
    if model.kv_cache_dtype == CacheDtype::Auto {
        model.kv_cache_dtype = CacheDtype::Fixed(DType::F32);
    }
    let loaded = model.load()?;
    let logits = sequence_logits(&loaded.model, &args.tokens.0, args.mode)?;
    write_safetensors(
        &args.out,
        &[TensorToWrite {
            name: "logits".into(),
            dtype: StDtype::F32,
            shape: vec![logits.rows(), logits.vocab],
            data: bytemuck::cast_slice(&logits.data),
        }],
    )?;
    eprintln!("wrote logits [{}, {}] to {}", logits.rows(), logits.vocab, args.out.display());
    Ok(())
}
