//! Constrained decoding in the serving engine: requests with grammars and
//! without run in the same batches, each gives exactly what it gives alone,
//! and every constrained answer follows its grammar.

mod common;

use std::sync::Arc;

use common::{collect, fixture_named, request};
use ferrum_engine::constraint::Grammar;
use ferrum_engine::generate::FinishReason;
use ferrum_engine::serving::{EngineConfig, EngineHandle, GenerationRequest, SubmitError, spawn};
use ferrum_engine::source::ModelSource;
use ferrum_engine::tokenizer::Tokenizer;
use ferrum_engine::{Backend, CpuBackend, Model};
use serde_json::{Value, json};

fn engine() -> (EngineHandle, Arc<Tokenizer>) {
    let source = ModelSource::open(&fixture_named("qwen3")).unwrap();
    let tokenizer = Arc::new(source.tokenizer.clone().unwrap());
    let backend: Arc<dyn Backend> = Arc::new(CpuBackend::new());
    let model = Model::from_store(source.config.clone(), &source.weights, backend).unwrap();
    // small steps: prompts are prefilled in chunks beside other sequences' decoding
    let config = EngineConfig { max_batch_tokens: 24, block_size: 4, num_blocks: 512, ..Default::default() };
    (spawn(model, Some(tokenizer.clone()), config).unwrap(), tokenizer)
}

/// Grammars whose every answer is short, so a random model finishes them.
fn grammars() -> Vec<Grammar> {
    vec![
        Grammar::JsonSchema(json!({
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}, "ok": {"type": "boolean"},
                           "tag": {"enum": ["red", "green"]}},
            "required": ["n", "ok", "tag"], "additionalProperties": false
        })),
        Grammar::Regex("[0-9]{1,3}(,[0-9]{1,3}){0,3}".into()),
        Grammar::Choice(vec!["yes".into(), "no".into(), "maybe (later)".into()]),
        Grammar::Lark(
            r#"start: "answer: " %json {"type": "array", "items": {"type": "boolean"}, "maxItems": 3,
                                        "x-guidance": {"whitespace_flexible": false}}"#
                .into(),
        ),
    ]
}

/// Checks `text` follows `grammar`.
fn follows(grammar: &Grammar, text: &str) -> bool {
    match grammar {
        Grammar::JsonSchema(_) => serde_json::from_str::<Value>(text).is_ok_and(|v| {
            v["n"].as_i64().is_some_and(|n| (0..=99).contains(&n))
                && v["ok"].is_boolean()
                && ["red", "green"].contains(&v["tag"].as_str().unwrap_or(""))
                && v.as_object().is_some_and(|o| o.len() == 3)
        }),
        Grammar::Regex(_) => {
            text.split(',').all(|n| (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
                && text.split(',').count() <= 4
        }
        Grammar::Choice(options) => options.iter().any(|o| o == text),
        Grammar::Lark(_) => text
            .strip_prefix("answer: ")
            .is_some_and(|rest| serde_json::from_str::<Vec<bool>>(rest).is_ok_and(|v| v.len() <= 3)),
        Grammar::JsonObject => serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object()),
    }
}

fn run(engine: &EngineHandle, tokenizer: &Tokenizer, requests: Vec<GenerationRequest>) -> Vec<(String, FinishReason)> {
    let receivers = engine.submit_all(requests).unwrap();
    receivers
        .into_iter()
        .map(|(_, rx)| {
            let (tokens, reason) = collect(rx);
            (tokenizer.decode(&tokens, true).unwrap(), reason)
        })
        .collect()
}

#[test]
fn constrained_and_free_requests_batch_together_and_match_each_alone() {
    let (engine, tokenizer) = engine();
    let grammars = grammars();
    let requests: Vec<GenerationRequest> = (0..16)
        .map(|i| {
            let prompt = tokenizer.encode(&format!("request {i}: tell me something"), false).unwrap();
            let grammar = (i % 2 == 0).then(|| grammars[(i / 2) % grammars.len()].clone());
            GenerationRequest { grammar, ..request(prompt, 60) }
        })
        .collect();
    let together = run(&engine, &tokenizer, requests.clone());
    for (i, (req, got)) in requests.iter().zip(&together).enumerate() {
        let alone = run(&engine, &tokenizer, vec![req.clone()]);
        assert_eq!(got, &alone[0], "request {i}: batched and alone differ");
        if let Some(g) = &req.grammar {
            assert_eq!(got.1, FinishReason::Stop, "request {i} ran out before its grammar ended: {:?}", got.0);
            assert!(follows(g, &got.0), "request {i}: {:?} does not follow {g:?}", got.0);
        }
    }
    let masks = engine.metrics.render();
    assert!(masks.contains("ferrum_grammar_mask_seconds_count"), "{masks}");
}

#[test]
fn a_grammar_that_does_not_compile_is_refused_at_submit() {
    let (engine, tokenizer) = engine();
    let prompt = tokenizer.encode("hi", false).unwrap();
    let bad = GenerationRequest { grammar: Some(Grammar::Regex("(unclosed".into())), ..request(prompt.clone(), 5) };
    let good = request(prompt, 5);
    // all or none: the good request beside it is refused too
    match engine.submit_all(vec![good, bad]) {
        Err(SubmitError::Invalid(m)) => assert!(m.contains("grammar"), "{m}"),
        other => panic!("{:?}", other.map(|v| v.len())),
    }
}
