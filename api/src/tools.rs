//! Tool calls: the tools a chat request offers, how the model is told of
//! them (its chat template's `tools`), how a required call is enforced (a
//! grammar in the model's own call syntax, so the arguments always parse),
//! and how calls are found in the model's text, whole or as it streams.
//!
//! Three syntaxes, picked by what the chat template teaches:
//! - Hermes / Qwen: `<tool_call>\n{"name": .., "arguments": {..}}\n</tool_call>`, one block per call;
//! - Llama 3: the whole answer is `{"name": .., "parameters": {..}}` (after `<|python_tag|>` at times);
//! - Mistral: `[TOOL_CALLS] [{"name": .., "arguments": {..}}, ..]`.

use serde::Deserialize;
use serde_json::{Value, json};

use ferrum_engine::chat_template::ChatTemplate;
use ferrum_engine::constraint::Grammar;
use ferrum_engine::tokenizer::Tokenizer;

use crate::error::ApiError;

#[derive(Clone, Debug, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: Function,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct Function {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of the arguments object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// `tool_choice`: "none", "auto", "required", or one function by name.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Named { function: NamedFunction },
}

#[derive(Clone, Debug, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

/// How the model writes its calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolSyntax {
    Hermes,
    Llama3Json,
    Mistral,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL_MARK: &str = "[TOOL_CALLS]";
const PYTHON_TAG: &str = "<|python_tag|>";

impl ToolSyntax {
    /// The syntax `template` teaches; Hermes when it names none.
    pub fn of_template(template: &ChatTemplate) -> Self {
        if template.mentions(MISTRAL_MARK) {
            ToolSyntax::Mistral
        } else if template.mentions(HERMES_OPEN) {
            ToolSyntax::Hermes
        } else if template.mentions(PYTHON_TAG) || template.mentions("ipython") {
            ToolSyntax::Llama3Json
        } else {
            ToolSyntax::Hermes
        }
    }

    /// Where the text of a call can begin.
    fn marker(self) -> Option<&'static str> {
        match self {
            ToolSyntax::Hermes => Some(HERMES_OPEN),
            ToolSyntax::Mistral => Some(MISTRAL_MARK),
            ToolSyntax::Llama3Json => None,
        }
    }

    /// The key that holds the arguments.
    fn arguments_key(self) -> &'static str {
        match self {
            ToolSyntax::Llama3Json => "parameters",
            ToolSyntax::Hermes | ToolSyntax::Mistral => "arguments",
        }
    }
}

/// What a chat request's tools turn into.
#[derive(Debug)]
pub struct ToolUse {
    /// For the template's `tools` (absent with `tool_choice: none`).
    pub template_tools: Option<Value>,
    /// A grammar when a call is required.
    pub grammar: Option<Grammar>,
    /// How to find calls in the answer (none with `tool_choice: none`).
    pub syntax: Option<ToolSyntax>,
}

impl ToolUse {
    /// From the request's `tools`, `tool_choice` and `parallel_tool_calls`,
    /// for a model with `template` and `tokenizer`.
    pub fn plan(
        tools: &[Tool],
        choice: Option<&ToolChoice>,
        parallel: bool,
        template: &ChatTemplate,
        tokenizer: &Tokenizer,
    ) -> Result<ToolUse, ApiError> {
        if let Some(t) = tools.iter().find(|t| t.kind != "function") {
            return Err(ApiError::bad_request(format!(
                "tools of type {:?} are not supported; use \"function\"",
                t.kind
            )));
        }
        let named = |name: &str| tools.iter().find(|t| t.function.name == name);
        let required: Option<Vec<&Tool>> = match choice {
            None if tools.is_empty() => None,
            None => None,
            Some(ToolChoice::Mode(m)) => match m.as_str() {
                "none" => return Ok(ToolUse { template_tools: None, grammar: None, syntax: None }),
                "auto" => None,
                "required" if tools.is_empty() => {
                    return Err(ApiError::bad_request("tool_choice \"required\" needs tools"));
                }
                "required" => Some(tools.iter().collect()),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "tool_choice must be none, auto, required or a function; got {other:?}"
                    )));
                }
            },
            Some(ToolChoice::Named { function }) => match named(&function.name) {
                Some(t) => Some(vec![t]),
                None => {
                    return Err(ApiError::bad_request(format!(
                        "tool_choice names {:?}, which is not among the tools",
                        function.name
                    )));
                }
            },
        };
        if tools.is_empty() {
            return Ok(ToolUse { template_tools: None, grammar: None, syntax: None });
        }
        let syntax = ToolSyntax::of_template(template);
        let template_tools: Vec<Value> =
            tools.iter().map(|t| json!({"type": "function", "function": t.function})).collect();
        let grammar = required.map(|r| call_grammar(syntax, &r, parallel, tokenizer));
        Ok(ToolUse { template_tools: Some(Value::Array(template_tools)), grammar, syntax: Some(syntax) })
    }
}

/// A grammar whose every sentence is one call (or several, with
/// `parallel`) of `tools` in `syntax`, with arguments valid under each
/// tool's schema.
fn call_grammar(syntax: ToolSyntax, tools: &[&Tool], parallel: bool, tokenizer: &Tokenizer) -> Grammar {
    let args = syntax.arguments_key();
    let one_call: Vec<Value> = tools
        .iter()
        .map(|t| {
            let params = t.function.parameters.clone().unwrap_or_else(|| json!({"type": "object"}));
            json!({"type": "object", "properties": {"name": {"const": t.function.name}, args: params},
                   "required": ["name", args], "additionalProperties": false})
        })
        .collect();
    let call = json!({"anyOf": one_call, "x-guidance": {"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}});
    let lark = match syntax {
        ToolSyntax::Hermes => {
            let open = literal(HERMES_OPEN, tokenizer);
            let close = literal(HERMES_CLOSE, tokenizer);
            let block = format!("{open} \"\\n\" call \"\\n\" {close}");
            let start = if parallel { format!("start: {block} (\"\\n\" {block})*") } else { format!("start: {block}") };
            format!("{start}\ncall: %json {call}")
        }
        ToolSyntax::Llama3Json => format!("start: call\ncall: %json {call}"),
        ToolSyntax::Mistral => {
            let calls = json!({"type": "array", "items": call, "minItems": 1, "maxItems": if parallel { 64 } else { 1 },
                               "x-guidance": {"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}});
            format!("start: {} \" \" calls\ncalls: %json {calls}", literal(MISTRAL_MARK, tokenizer))
        }
    };
    Grammar::Lark(lark)
}

/// `text` in a Lark grammar: the special token when the tokenizer has it
/// as one (`<[id]>`), else the quoted string.
fn literal(text: &str, tokenizer: &Tokenizer) -> String {
    if let Ok(ids) = tokenizer.encode(text, false)
        && let [id] = ids[..]
        && tokenizer.decode(&[id], true).is_ok_and(|t| t.is_empty())
    {
        return format!("<[{id}]>");
    }
    serde_json::to_string(text).expect("a string serializes")
}

/// One call found in the model's text; `arguments` is JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: String,
}

/// A call's JSON (`{"name": .., "arguments"|"parameters": {..}}`).
fn call_of(v: &Value) -> Option<ParsedCall> {
    let name = v.get("name")?.as_str()?.to_string();
    let args = v.get("arguments").or_else(|| v.get("parameters")).cloned().unwrap_or(json!({}));
    let arguments = match args {
        // JSON text already, or a bare string: then the string as JSON
        Value::String(s) if serde_json::from_str::<Value>(&s).is_ok() => s,
        other => other.to_string(),
    };
    Some(ParsedCall { name, arguments })
}

/// The calls in `text` (one JSON call, or a list of them), if it is all calls.
fn calls_in_json(text: &str) -> Option<Vec<ParsedCall>> {
    let mut calls = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text.trim()).into_iter::<Value>();
    for v in stream.by_ref() {
        match v.ok()? {
            Value::Array(items) => calls.extend(items.iter().map(call_of).collect::<Option<Vec<_>>>()?),
            v => calls.push(call_of(&v)?),
        }
    }
    (!calls.is_empty()).then_some(calls)
}

/// The model's text split into what it says and the calls it makes.
pub fn parse(syntax: ToolSyntax, text: &str) -> (String, Vec<ParsedCall>) {
    let mut stream = ToolStream::new(syntax);
    let mut content = String::new();
    let mut calls = Vec::new();
    for piece in stream.push(text).into_iter().chain(stream.finish()) {
        match piece {
            Piece::Content(c) => content.push_str(&c),
            Piece::Call(c) => calls.push(c),
        }
    }
    (content, calls)
}

/// What a stream of text turns into: words to show, or a whole call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Content(String),
    Call(ParsedCall),
}

/// Finds calls in text as it arrives: text that cannot be part of a call
/// passes through at once; a call is held until it is whole.
#[derive(Debug)]
pub struct ToolStream {
    syntax: ToolSyntax,
    /// Text not yet passed on.
    held: String,
    /// Inside a call (after the marker; for Llama 3, the answer began with JSON).
    in_call: bool,
    /// Some text has been passed on or held (Llama 3 decides on the first).
    started: bool,
}

impl ToolStream {
    pub fn new(syntax: ToolSyntax) -> Self {
        ToolStream { syntax, held: String::new(), in_call: false, started: false }
    }

    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            if self.in_call {
                match self.syntax {
                    ToolSyntax::Hermes => {
                        let Some(end) = self.held.find(HERMES_CLOSE) else { break };
                        let raw: String = self.held.drain(..end + HERMES_CLOSE.len()).collect();
                        out.extend(self.calls_or_text(&raw[..end], &raw));
                        self.in_call = false;
                    }
                    // the rest of the answer is the call(s)
                    ToolSyntax::Mistral | ToolSyntax::Llama3Json => break,
                }
                continue;
            }
            match self.syntax.marker() {
                Some(marker) => {
                    if let Some(at) = self.held.find(marker) {
                        out.push(Piece::Content(self.held[..at].to_string()));
                        self.held.drain(..at + marker.len());
                        self.in_call = true;
                        continue;
                    }
                    // pass on all but a tail that may begin the marker
                    let keep = (1..marker.len().min(self.held.len() + 1))
                        .rev()
                        .find(|&n| {
                            self.held.is_char_boundary(self.held.len() - n)
                                && marker.starts_with(&self.held[self.held.len() - n..])
                        })
                        .unwrap_or(0);
                    let pass: String = self.held.drain(..self.held.len() - keep).collect();
                    out.push(Piece::Content(pass));
                }
                None => {
                    let trimmed = self.held.trim_start();
                    if trimmed.is_empty() && !self.started {
                        break; // leading whitespace: undecided
                    }
                    if !self.started {
                        self.started = true;
                        let rest = trimmed.strip_prefix(PYTHON_TAG).unwrap_or(trimmed);
                        if rest.starts_with('{') || rest.starts_with('[') || PYTHON_TAG.starts_with(trimmed) {
                            self.in_call = true;
                            break;
                        }
                    }
                    out.push(Piece::Content(std::mem::take(&mut self.held)));
                }
            }
            break;
        }
        out.retain(|p| !matches!(p, Piece::Content(c) if c.is_empty()));
        out
    }

    /// The end of the text: a call still held is parsed now (a model may
    /// stop right after its JSON), or given back as text when it is none.
    pub fn finish(&mut self) -> Vec<Piece> {
        let held = std::mem::take(&mut self.held);
        let out = if self.in_call {
            let body = match self.syntax {
                ToolSyntax::Llama3Json => held.trim_start().strip_prefix(PYTHON_TAG).unwrap_or(held.trim_start()),
                _ => &held,
            };
            self.calls_or_text(body, &held)
        } else {
            vec![Piece::Content(held)]
        };
        self.in_call = false;
        out.into_iter().filter(|p| !matches!(p, Piece::Content(c) if c.is_empty())).collect()
    }

    /// The calls in `body`, or, when it holds none, the text as it came
    /// (`raw`: what followed the marker) for the client to read.
    fn calls_or_text(&self, body: &str, raw: &str) -> Vec<Piece> {
        match calls_in_json(body) {
            Some(calls) => calls.into_iter().map(Piece::Call).collect(),
            None => vec![Piece::Content(format!("{}{raw}", self.syntax.marker().unwrap_or("")))],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> ParsedCall {
        ParsedCall { name: name.into(), arguments: arguments.into() }
    }

    #[test]
    fn calls_are_found_in_each_syntax() {
        let (text, calls) = parse(
            ToolSyntax::Hermes,
            "Let me look.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>",
        );
        assert_eq!(text.trim(), "Let me look.");
        assert_eq!(calls, [call("weather", r#"{"city":"Paris"}"#), call("time", "{}")]);
        // a model that stops right after its JSON, without the closing tag
        let (_, calls) = parse(ToolSyntax::Hermes, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}");
        assert_eq!(calls, [call("f", r#"{"x":1}"#)]);
        let (text, calls) =
            parse(ToolSyntax::Llama3Json, "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"a\": [1, 2]}}");
        assert_eq!((text.as_str(), calls), ("", vec![call("f", r#"{"a":[1,2]}"#)]));
        let (text, calls) = parse(
            ToolSyntax::Mistral,
            "ok [TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {}}, {\"name\": \"g\", \"arguments\": {\"b\": true}}]",
        );
        assert_eq!((text.as_str(), calls), ("ok ", vec![call("f", "{}"), call("g", r#"{"b":true}"#)]));
        // arguments as JSON text stay as they are; a bare string becomes a
        // JSON string (found by the tool_calls fuzz target)
        let (_, calls) = parse(ToolSyntax::Llama3Json, r#"{"name": "f", "parameters": "{\"x\": 1}"}"#);
        assert_eq!(calls, [call("f", r#"{"x": 1}"#)]);
        let (_, calls) = parse(ToolSyntax::Llama3Json, r#"<|python_tag|>{"name": "f", "parameters":"include_usage"}"#);
        assert_eq!(calls, [call("f", r#""include_usage""#)]);
    }

    #[test]
    fn text_that_is_no_call_stays_text() {
        for (syntax, text) in [
            (ToolSyntax::Hermes, "Just words, no calls."),
            (ToolSyntax::Hermes, "<tool_call>\nnot json\n</tool_call> after"),
            (ToolSyntax::Llama3Json, "{ this is not json"),
            (ToolSyntax::Llama3Json, "Plain answer."),
            (ToolSyntax::Mistral, "[TOOL_CALLS] garbage"),
        ] {
            let (content, calls) = parse(syntax, text);
            assert_eq!((content.as_str(), calls.len()), (text, 0), "{syntax:?}");
        }
    }

    /// However the text is cut into pieces, the stream finds the same
    /// content and calls as the whole text, and passes plain words on at once.
    #[test]
    fn streaming_in_any_pieces_equals_parsing_the_whole() {
        let text =
            "Sure.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Zürich\"}}\n</tool_call> done";
        let whole = parse(ToolSyntax::Hermes, text);
        for size in 1..12 {
            let mut stream = ToolStream::new(ToolSyntax::Hermes);
            let (mut content, mut calls) = (String::new(), Vec::new());
            let chars: Vec<char> = text.chars().collect();
            for chunk in chars.chunks(size) {
                for p in stream.push(&chunk.iter().collect::<String>()) {
                    match p {
                        Piece::Content(c) => content.push_str(&c),
                        Piece::Call(c) => calls.push(c),
                    }
                }
            }
            for p in stream.finish() {
                if let Piece::Content(c) = p {
                    content.push_str(&c)
                } else if let Piece::Call(c) = p {
                    calls.push(c)
                }
            }
            assert_eq!((content, calls), whole, "pieces of {size}");
        }
        let mut stream = ToolStream::new(ToolSyntax::Hermes);
        assert_eq!(stream.push("Hello <tool"), [Piece::Content("Hello ".into())]);
    }
}
