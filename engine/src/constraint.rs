//! Constrained decoding: an answer that must follow a JSON schema, a
//! regular expression, one of a list of strings or a Lark grammar, through
//! llguidance (the grammar engine llama.cpp and mistral.rs use). Each step
//! a sequence's [`Constraint`] gives the set of tokens that keep the text
//! inside the grammar; the sampler sees only those; the chosen token moves
//! the constraint on; when the grammar can go no further the sequence ends.
//!
//! [`Grammars`] is built once per model from its tokenizer (every token's
//! bytes, as llguidance reads tokenizer.json) and compiles requests'
//! grammars; a grammar that does not compile is the request's error.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// What the answer must follow, as a request states it.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// Any JSON object (OpenAI's `{"type": "json_object"}`).
    JsonObject,
    /// JSON valid under this schema.
    JsonSchema(Value),
    /// Text matching this regular expression, whole.
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A Lark grammar (llguidance's dialect: `%json {...}` embeds a schema).
    Lark(String),
}

impl Grammar {
    fn top_level(&self) -> Result<TopLevelGrammar> {
        Ok(match self {
            Grammar::JsonObject => TopLevelGrammar::from_json_schema(compact(serde_json::json!({"type": "object"}))),
            Grammar::JsonSchema(schema) => TopLevelGrammar::from_json_schema(compact(schema.clone())),
            Grammar::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Grammar::Choice(options) => {
                if options.is_empty() {
                    return Err(Error::Request("a choice needs at least one option".into()));
                }
                let alternatives: Vec<String> = options.iter().map(|o| escape_regex(o)).collect();
                TopLevelGrammar::from_regex(&alternatives.join("|"))
            }
            Grammar::Lark(source) => TopLevelGrammar::from_lark(source.clone()),
        })
    }
}

/// JSON written as `json.dumps` writes it (`{"a": 1, "b": [2, 3]}`), unless
/// the schema sets its own `x-guidance` options: free whitespace lets a
/// model pad without end, and small models do.
fn compact(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema
        && !map.contains_key("x-guidance")
    {
        map.insert(
            "x-guidance".into(),
            serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
        );
    }
    schema
}

/// `text` as a regex that matches only itself.
fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A model's grammar compiler: its vocabulary as llguidance sees it.
pub struct Grammars {
    factory: ParserFactory,
}

impl Grammars {
    /// For a model whose logits have `vocab_size` rows and which stops at
    /// `eos_token_ids`. Ids past the tokenizer's vocabulary are never allowed.
    pub fn new(tokenizer: &Tokenizer, vocab_size: usize, eos_token_ids: &[u32]) -> Result<Self> {
        let bad = |e: String| Error::Tokenizer(format!("cannot build the grammar vocabulary: {e}"));
        let json: Value = serde_json::from_str(&tokenizer.to_json()?).map_err(|e| bad(e.to_string()))?;
        let mut words = llguidance::token_bytes_from_tokenizer_json(&json).map_err(|e| bad(e.to_string()))?;
        words.resize(vocab_size, Vec::new());
        let special = |id: usize| {
            let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
            w.extend_from_slice(format!("<[{id}]>").as_bytes());
            w
        };
        for (id, w) in words.iter_mut().enumerate() {
            if w.is_empty() {
                *w = special(id); // padding rows: a special token no text grammar allows
            }
        }
        let eos: Vec<u32> = eos_token_ids.iter().copied().filter(|&e| (e as usize) < vocab_size).collect();
        let Some(&first_eos) = eos.first() else {
            return Err(bad("the model has no end-of-sequence token inside its vocabulary".into()));
        };
        for &e in &eos {
            let w = &mut words[e as usize];
            if w.first() != Some(&TokTrie::SPECIAL_TOKEN_MARKER) {
                w.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
            }
        }
        let trie = TokTrie::from(&TokRxInfo::new(vocab_size as u32, first_eos), &words).with_eos_tokens(&eos);
        // not canonical: forced text is never re-tokenized, the model picks its own tokens
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| bad(e.to_string()))?;
        factory.quiet();
        Ok(Grammars { factory })
    }

    /// `grammar` compiled for one sequence, or why it cannot be.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint> {
        let parser = self.factory.create_parser(grammar.top_level()?);
        let matcher = Matcher::new(parser);
        if let Some(e) = matcher.get_error() {
            return Err(Error::Request(format!("the grammar does not compile: {e}")));
        }
        Ok(Constraint { matcher })
    }
}

/// One sequence's place in its grammar.
pub struct Constraint {
    matcher: Matcher,
}

impl Constraint {
    /// The tokens that keep the text inside the grammar (only EOS once it
    /// is complete).
    pub fn allowed(&mut self) -> Result<TokenMask> {
        let mask = self.matcher.compute_mask_or_eos().map_err(|e| Error::Request(format!("grammar: {e}")))?;
        Ok(TokenMask(mask))
    }

    /// Moves on past `token`, which must be allowed.
    pub fn accept(&mut self, token: u32) -> Result<()> {
        self.matcher.consume_token(token).map_err(|e| Error::Request(format!("grammar: {e}")))
    }

    /// Whether the grammar is complete and nothing more may follow.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Constraint(stopped: {})", self.matcher.is_stopped())
    }
}

/// The tokens a constraint allows, one bit each.
#[derive(Clone, Debug)]
pub struct TokenMask(SimpleVob);

impl TokenMask {
    pub fn allows(&self, token: u32) -> bool {
        (token as usize) < self.0.len() && self.0.is_allowed(token)
    }

    /// Sets every disallowed logit to -inf.
    pub fn apply(&self, logits: &mut [f32]) {
        for (t, l) in logits.iter_mut().enumerate() {
            if !self.allows(t as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    pub fn count(&self) -> usize {
        self.0.num_set()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::sampler::Rng;

    fn fixture_tokenizer() -> Tokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3");
        Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap()
    }

    /// Walks `grammar` choosing allowed tokens at random (as a sampler over
    /// a random model would) and returns the text, whatever path it takes.
    fn walk(grammar: &Grammar, seed: u64) -> String {
        let tok = fixture_tokenizer();
        let eos = tok.token_to_id("<|end_of_text|>").unwrap();
        let grammars = Grammars::new(&tok, tok.vocab_size() + 7, &[eos]).unwrap();
        let mut c = grammars.compile(grammar).unwrap();
        let mut rng = Rng::new(seed);
        let closers: Vec<u32> = ["\"", "}", "]", "0"].iter().filter_map(|c| tok.token_to_id(c)).collect();
        let mut ids = Vec::new();
        for _ in 0..400 {
            if c.is_finished() {
                break;
            }
            let mask = c.allowed().unwrap();
            let allowed: Vec<u32> = (0..tok.vocab_size() as u32 + 7).filter(|&t| mask.allows(t)).collect();
            assert!(!allowed.is_empty());
            // end when possible half the time, and lean on tokens that close
            // a string or an object, so walks finish
            let r = rng.next_f64();
            let closer = allowed.iter().find(|t| closers.contains(t));
            let t = if allowed.contains(&eos) && r < 0.5 {
                eos
            } else if let Some(&c) = closer.filter(|_| r < 0.8) {
                c
            } else {
                allowed[(rng.next_u64() % allowed.len() as u64) as usize]
            };
            c.accept(t).unwrap();
            if t == eos {
                break;
            }
            ids.push(t);
        }
        assert!(c.is_finished(), "the walk never finished: {:?}", tok.decode(&ids, false));
        tok.decode(&ids, false).unwrap()
    }

    #[test]
    fn random_walks_stay_inside_the_grammar() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"n": {"type": "integer"}, "tag": {"enum": ["a", "b"]}},
            "required": ["n", "tag"],
            "additionalProperties": false
        });
        for seed in 0..20 {
            let text = walk(&Grammar::JsonSchema(schema.clone()), seed);
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let integer = v["n"].as_f64().is_some_and(|n| n.fract() == 0.0); // -0 is an integer too
            assert!(integer && ["a", "b"].contains(&v["tag"].as_str().unwrap()), "{text}");
            assert_eq!(v.as_object().unwrap().len(), 2, "{text}");
            let text = walk(&Grammar::Choice(vec!["yes".into(), "no (a.b)".into()]), seed);
            assert!(text == "yes" || text == "no (a.b)", "{text:?}");
            let text = walk(&Grammar::Regex("[0-9]{3}-[a-z]+".into()), seed);
            let (digits, letters) = text.split_once('-').unwrap();
            assert!(digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
            assert!(!letters.is_empty() && letters.bytes().all(|b| b.is_ascii_lowercase()), "{text:?}");
            let text = walk(&Grammar::JsonObject, seed);
            match serde_json::from_str::<Value>(&text) {
                Ok(v) => assert!(v.is_object(), "{text:?}"),
                // valid JSON, but a number like 2E9000 is past f64 for serde
                Err(e) => assert!(e.to_string().contains("out of range") && text.starts_with('{'), "{text:?}: {e}"),
            }
        }
    }

    #[test]
    fn a_bad_grammar_is_a_request_error() {
        let tok = fixture_tokenizer();
        let grammars = Grammars::new(&tok, tok.vocab_size(), &[0]).unwrap();
        for bad in [
            Grammar::Regex("(unclosed".into()),
            Grammar::Lark("start: undefined_rule".into()),
            Grammar::JsonSchema(serde_json::json!({"type": "no-such-type"})),
            Grammar::Choice(vec![]),
        ] {
            assert!(matches!(grammars.compile(&bad), Err(Error::Request(_))), "{bad:?}");
        }
    }
}
