//! Text to token ids and back, through Hugging Face's `tokenizers` crate,
//! plus the special tokens named in `tokenizer_config.json`.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

impl Tokenizer {
    /// Reads `tokenizer.json`, and the special tokens of
    /// `tokenizer_config.json` when that file is beside it.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Tokenizer(format!(
                "{} not found; this model folder has no tokenizer (pass token ids instead of text)",
                path.display()
            )));
        }
        let inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let cfg = path.with_file_name("tokenizer_config.json");
        let cfg: Option<Value> = std::fs::read_to_string(&cfg).ok().and_then(|t| serde_json::from_str(&t).ok());
        let special = |key: &str| cfg.as_ref().and_then(|c| special_token_text(c.get(key)?));
        Ok(Tokenizer { bos_token: special("bos_token"), eos_token: special("eos_token"), inner })
    }

    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Tokenizer { inner, bos_token: None, eos_token: None })
    }

    /// `add_special_tokens` adds what the tokenizer's post-processor adds
    /// (usually BOS), as transformers does for a plain prompt.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special_tokens).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The tokenizer as tokenizer.json text (what the grammar engine reads
    /// each token's bytes from).
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| Error::Tokenizer(e.to_string()))
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer(vocab={}, bos={:?}, eos={:?})", self.vocab_size(), self.bos_token, self.eos_token)
    }
}

/// Detokenises a growing id sequence, yielding text only once it is complete
/// UTF-8 (a multi-byte character split over tokens waits for its end). It
/// owns no borrow of the tokenizer, so a sequence can keep it across steps;
/// the same prefix/read offsets scheme as transformers' TextStreamer and TGI.
#[derive(Clone, Debug, Default)]
pub struct IncrementalDecoder {
    /// start of the window decoded for context (so spaces merge correctly)
    prefix_offset: usize,
    /// ids before this one have been emitted
    read_offset: usize,
}

impl IncrementalDecoder {
    /// New text made complete by the last id of `ids`.
    pub fn step(&mut self, tok: &Tokenizer, ids: &[u32], skip_special_tokens: bool) -> Result<Option<String>> {
        let prefix = tok.decode(&ids[self.prefix_offset..self.read_offset], skip_special_tokens)?;
        let full = tok.decode(&ids[self.prefix_offset..], skip_special_tokens)?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') && full.is_char_boundary(prefix.len()) {
            let new = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = ids.len();
            return Ok(Some(new));
        }
        Ok(None)
    }
}

/// A special token is written as a string or as an AddedToken object.
fn special_token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_tokenizer() -> Tokenizer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama/tokenizer.json");
        Tokenizer::from_file(&path).unwrap()
    }

    #[test]
    fn streaming_yields_only_whole_characters() {
        let tok = fixture_tokenizer();
        let text = "Ferrum: café, ☃ and 😀 — done.";
        let ids = tok.encode(text, false).unwrap();
        assert!(ids.len() > text.chars().count() / 2, "byte-level pieces: {}", ids.len());
        let mut stream = IncrementalDecoder::default();
        let mut pieces = Vec::new();
        for n in 1..=ids.len() {
            if let Some(p) = stream.step(&tok, &ids[..n], true).unwrap() {
                assert!(!p.contains('\u{FFFD}'), "a split character leaked: {p:?}");
                pieces.push(p);
            }
        }
        assert_eq!(pieces.concat(), text);
        // the emoji's 4 bytes are byte tokens, so some steps yielded nothing
        assert!(pieces.len() < ids.len());
    }

    #[test]
    fn special_tokens_come_from_tokenizer_config() {
        let tok = fixture_tokenizer();
        assert_eq!(tok.bos_token.as_deref(), Some("<|begin_of_text|>"));
        assert_eq!(tok.encode("hi", true).unwrap()[0], 0, "BOS added by the post-processor");
    }
}
