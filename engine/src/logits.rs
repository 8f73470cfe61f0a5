//! Logits for every position of a token sequence, computed either in one
//! forward pass (prefill) or one token at a time through the KV cache
//! (decode). The two must agree; both are checked against transformers.

use crate::error::{Error, Result};
use crate::generate::DEFAULT_BLOCK_SIZE;
use crate::kv_cache::{BlockTable, PagedKv};
use crate::model::{Logits, LogitsWanted, Model, SeqChunk};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsMode {
    /// All tokens in one forward pass.
    Prefill,
    /// One token per forward pass, attending to the cached earlier ones.
    Decode,
}

impl std::str::FromStr for LogitsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "prefill" => Ok(LogitsMode::Prefill),
            "decode" => Ok(LogitsMode::Decode),
            other => Err(format!("unknown mode {other:?} (prefill | decode)")),
        }
    }
}

/// Logits [tokens.len(), vocab]: row i predicts the token after tokens[..=i].
pub fn sequence_logits(model: &Model, tokens: &[u32], mode: LogitsMode) -> Result<Logits> {
    if tokens.is_empty() {
        return Err(Error::Request("no tokens".into()));
    }
    if tokens.len() > model.config.max_position_embeddings {
        return Err(Error::Request(format!(
            "{} tokens exceed the model's context of {}",
            tokens.len(),
            model.config.max_position_embeddings
        )));
    }
    let mut kv = PagedKv::for_tokens(model.backend(), &model.config, tokens.len(), DEFAULT_BLOCK_SIZE)?;
    let mut table = BlockTable::default();
    table.reserve(&mut kv.pool, tokens.len(), DEFAULT_BLOCK_SIZE)?;
    let chunk = |start: usize, end: usize| SeqChunk {
        tokens: &tokens[start..end],
        start_pos: start,
        block_table: table.blocks(),
        logits: LogitsWanted::All,
    };
    match mode {
        LogitsMode::Prefill => model.forward(&[chunk(0, tokens.len())], &kv.cache),
        LogitsMode::Decode => {
            let mut all = Logits {
                data: Vec::with_capacity(tokens.len() * model.config.vocab_size),
                vocab: model.config.vocab_size,
            };
            for i in 0..tokens.len() {
                all.data.extend(model.forward(&[chunk(i, i + 1)], &kv.cache)?.data);
            }
            Ok(all)
        }
    }
}
