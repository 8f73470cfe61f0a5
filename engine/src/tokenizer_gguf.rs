//! A Hugging Face tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*`
//! metadata, so GGUF models need no tokenizer.json. Two vocabulary kinds:
//! `gpt2` (byte-level BPE with merges; the pre-tokenizer is named by
//! `tokenizer.ggml.pre`) and `llama` (SentencePiece BPE with scores and byte
//! fallback; merges are derived from the scores as transformers'
//! `SentencePieceExtractor` does).

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_UNKNOWN: i32 = 2;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_BYTE: i32 = 6;

/// The vocabulary fields of a GGUF file.
#[derive(Clone, Debug, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: "gpt2" or "llama"
    pub model: String,
    /// `tokenizer.ggml.pre`
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub scores: Vec<f32>,
    pub merges: Vec<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub add_bos_token: Option<bool>,
    pub add_space_prefix: Option<bool>,
}

// The split regexes of the pre-tokenizers llama.cpp names (llama-vocab.cpp),
// in the spelling of the Hugging Face tokenizer.json files they come from.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub const SUPPORTED_PRE: [&str; 8] =
    ["default", "gpt-2", "llama-bpe", "llama3", "qwen2", "smollm", "starcoder", "refact"];

impl GgufVocab {
    pub fn build(&self) -> Result<Tokenizer> {
        if self.tokens.is_empty() {
            return Err(Error::Tokenizer("the GGUF file has no tokenizer.ggml.tokens".into()));
        }
        if !self.token_types.is_empty() && self.token_types.len() != self.tokens.len() {
            return Err(Error::Tokenizer(format!(
                "{} token types for {} tokens",
                self.token_types.len(),
                self.tokens.len()
            )));
        }
        let json = match self.model.as_str() {
            "gpt2" => self.byte_level_bpe()?,
            "llama" => self.sentencepiece_bpe()?,
            other => {
                return Err(Error::Tokenizer(format!(
                    "GGUF tokenizer model {other:?} is not supported yet (supported: gpt2, llama)"
                )));
            }
        };
        let bytes = serde_json::to_vec(&json).expect("a JSON value serialises");
        let mut tok = Tokenizer::from_json_bytes(&bytes)?;
        tok.bos_token = self.bos_token_id.and_then(|id| self.tokens.get(id as usize)).cloned();
        tok.eos_token = self.eos_token_id.and_then(|id| self.tokens.get(id as usize)).cloned();
        Ok(tok)
    }

    fn token_type(&self, id: usize) -> i32 {
        self.token_types.get(id).copied().unwrap_or(1)
    }

    fn vocab_map(&self) -> serde_json::Map<String, Value> {
        self.tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect()
    }

    /// Control and user-defined tokens are matched whole, before the model.
    fn added_tokens(&self) -> Vec<Value> {
        (0..self.tokens.len())
            .filter(|&i| matches!(self.token_type(i), TOKEN_CONTROL | TOKEN_USER_DEFINED | TOKEN_UNKNOWN))
            .map(|i| {
                json!({
                    "id": i, "content": self.tokens[i], "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": self.token_type(i) != TOKEN_USER_DEFINED,
                })
            })
            .collect()
    }

    /// BOS prepended by the post-processor when the file asks for it.
    fn post_processor(&self, default_add_bos: bool, otherwise: Value) -> Value {
        match (self.add_bos_token.unwrap_or(default_add_bos), self.bos_token_id) {
            (true, Some(id)) => {
                let bos = &self.tokens[id as usize];
                json!({
                    "type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                             {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                    "special_tokens": {bos.as_str(): {"id": bos, "ids": [id], "tokens": [bos]}},
                })
            }
            _ => otherwise,
        }
    }

    fn byte_level_bpe(&self) -> Result<Value> {
        let pre = self.pre.as_deref().unwrap_or("default");
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        let split = |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
        let digits = json!({"type": "Digits", "individual_digits": true});
        let (normalizer, pre_tokenizer, ignore_merges) = match pre {
            "default" | "gpt-2" => (Value::Null, byte_level(true), false),
            "llama-bpe" | "llama3" => (
                Value::Null,
                json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]}),
                true,
            ),
            "qwen2" => (
                json!({"type": "NFC"}),
                json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]}),
                false,
            ),
            "smollm" | "starcoder" | "refact" => {
                (Value::Null, json!({"type": "Sequence", "pretokenizers": [digits, byte_level(true)]}), false)
            }
            other => {
                return Err(Error::Tokenizer(format!(
                    "GGUF pre-tokenizer {other:?} is not supported yet (supported: {})",
                    SUPPORTED_PRE.join(", ")
                )));
            }
        };
        let merges: Vec<Value> = self
            .merges
            .iter()
            .map(|m| match m.split_once(' ') {
                Some((a, b)) => Ok(json!([a, b])),
                None => Err(Error::Tokenizer(format!("merge {m:?} is not two tokens"))),
            })
            .collect::<Result<_>>()?;
        let byte_level_post =
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": self.added_tokens(),
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": self.post_processor(false, byte_level_post),
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": ignore_merges, "vocab": self.vocab_map(), "merges": merges,
            },
        }))
    }

    fn sentencepiece_bpe(&self) -> Result<Value> {
        if self.scores.len() != self.tokens.len() {
            return Err(Error::Tokenizer(format!(
                "a SentencePiece vocabulary needs one score per token ({} scores, {} tokens)",
                self.scores.len(),
                self.tokens.len()
            )));
        }
        let unk = (0..self.tokens.len()).find(|&i| self.token_type(i) == TOKEN_UNKNOWN).map(|i| &self.tokens[i]);
        let normalizer = if self.add_space_prefix.unwrap_or(true) {
            json!({"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u{2581}"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]})
        } else {
            json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"})
        };
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if self.add_space_prefix.unwrap_or(true) {
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": self.added_tokens(),
            "normalizer": normalizer,
            "pre_tokenizer": null,
            "post_processor": self.post_processor(true, Value::Null),
            "decoder": {"type": "Sequence", "decoders": decoders},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": self.vocab_map(), "merges": self.sentencepiece_merges(),
            },
        }))
    }

    /// Every split of a normal piece into two pieces of the vocabulary is a
    /// merge, ranked by the merged piece's score (highest first), ties by the
    /// halves' ids: the order transformers' `SentencePieceExtractor` gives.
    fn sentencepiece_merges(&self) -> Vec<Value> {
        let ids: HashMap<&str, usize> = self.tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
        let mut by_score: Vec<usize> = (0..self.tokens.len()).collect();
        by_score.sort_by(|&a, &b| self.scores[b].total_cmp(&self.scores[a]));
        let mut merges: Vec<(usize, usize, f32)> = Vec::new();
        for piece_id in by_score {
            if self.token_type(piece_id) == TOKEN_BYTE {
                continue;
            }
            let piece = &self.tokens[piece_id];
            let mut local: Vec<(usize, usize, f32)> = piece
                .char_indices()
                .skip(1)
                .filter_map(|(at, _)| {
                    let (l, r) = piece.split_at(at);
                    Some((*ids.get(l)?, *ids.get(r)?, self.scores[piece_id]))
                })
                .collect();
            local.sort_by_key(|&(l, r, _)| (l, r));
            merges.extend(local);
        }
        merges.sort_by(|a, b| b.2.total_cmp(&a.2)); // stable: keeps the order above within a score
        merges.into_iter().map(|(l, r, _)| json!([self.tokens[l], self.tokens[r]])).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_pre_tokenizers_and_models_are_named_errors() {
        let vocab = GgufVocab {
            model: "gpt2".into(),
            pre: Some("jais".into()),
            tokens: vec!["a".into()],
            ..Default::default()
        };
        let err = vocab.build().unwrap_err().to_string();
        assert!(err.contains("jais") && err.contains("smollm"), "{err}");
        let vocab = GgufVocab { model: "rwkv".into(), tokens: vec!["a".into()], ..Default::default() };
        assert!(vocab.build().unwrap_err().to_string().contains("rwkv"));
    }

    #[test]
    fn sentencepiece_merges_follow_scores() {
        // "▁a" scores higher than "ab", so ("▁", "a") merges first
        let tokens = ["<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab", "▁ab"];
        let vocab = GgufVocab {
            model: "llama".into(),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            token_types: vec![2, 3, 3, 1, 1, 1, 1, 1, 1],
            scores: vec![0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0],
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            ..Default::default()
        };
        let tok = vocab.build().unwrap();
        assert_eq!(tok.encode("ab", false).unwrap(), [8], "▁ab via ▁a + b");
        assert_eq!(tok.encode("ab", true).unwrap(), [1, 8], "BOS by default for SentencePiece");
        assert_eq!(tok.decode(&[8, 7], true).unwrap(), "abab");
    }
}
