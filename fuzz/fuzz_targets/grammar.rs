//! Grammars from a stranger (a request's regex, Lark grammar, choice or
//! JSON schema) compiled against a real vocabulary (the qwen3 fixture's)
//! and walked a few steps: each must compile or be a request error, and
//! masks must come in bounded time. The first byte picks the kind.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ferrum_engine::constraint::{Grammar, Grammars};
use ferrum_engine::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

/// The compiler and the vocabulary size.
fn grammars() -> &'static (Grammars, u32) {
    static GRAMMARS: OnceLock<(Grammars, u32)> = OnceLock::new();
    GRAMMARS.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3/tokenizer.json");
        let tok = Tokenizer::from_file(&path).expect("the fixture tokenizer");
        let eos = tok.token_to_id("<|end_of_text|>").expect("an EOS token");
        let grammars = Grammars::new(&tok, tok.vocab_size(), &[eos]).expect("the fixture's vocabulary");
        (grammars, tok.vocab_size() as u32)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest).into_owned();
    let grammar = match kind % 4 {
        0 => Grammar::Regex(text),
        1 => Grammar::Lark(text),
        2 => Grammar::Choice(text.split('\n').map(str::to_string).collect()),
        _ => match serde_json::from_str(&text) {
            Ok(schema) => Grammar::JsonSchema(schema),
            Err(_) => return,
        },
    };
    let (grammars, vocab) = grammars();
    let Ok(mut constraint) = grammars.compile(&grammar) else { return };
    // a few steps down the lowest allowed token
    for _ in 0..8 {
        if constraint.is_finished() {
            break;
        }
        let Ok(mask) = constraint.allowed() else { break };
        let Some(token) = (0..*vocab).find(|&t| mask.allows(t)) else { break };
        if constraint.accept(token).is_err() {
            break;
        }
    }
});
