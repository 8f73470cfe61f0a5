//! The OpenAI request bodies Ferrum accepts, and how they become engine
//! requests. Unknown fields are ignored, as OpenAI-compatible servers do.

use serde::Deserialize;
use serde_json::Value;

use ferrum_engine::chat_template::Message;
use ferrum_engine::constraint::Grammar;
use ferrum_engine::sampler::SamplingParams;

use crate::error::ApiError;
use crate::tools::{Tool, ToolChoice};

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling fields shared by both endpoints (OpenAI's plus vLLM's extras).
#[derive(Debug, Default, Deserialize)]
pub struct SamplingFields {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<u64>,
    /// Keep generating past EOS (vLLM's extension; benchmarks use it).
    #[serde(default)]
    pub ignore_eos: bool,
    /// Token id (as a string, OpenAI's spelling) -> bias in [-100, 100].
    pub logit_bias: Option<std::collections::BTreeMap<String, f32>>,
}

impl SamplingFields {
    /// Over the server's defaults; validated.
    pub fn params(&self, defaults: &SamplingParams) -> Result<SamplingParams, ApiError> {
        let mut p = defaults.clone();
        p.temperature = self.temperature.unwrap_or(p.temperature);
        p.top_p = self.top_p.unwrap_or(p.top_p);
        p.top_k = match self.top_k {
            None => p.top_k,
            Some(k) if k <= 0 => 0, // -1 and 0 both mean "off" (vLLM)
            Some(k) => k as usize,
        };
        p.min_p = self.min_p.unwrap_or(p.min_p);
        p.presence_penalty = self.presence_penalty.unwrap_or(0.0);
        p.frequency_penalty = self.frequency_penalty.unwrap_or(0.0);
        p.repetition_penalty = self.repetition_penalty.unwrap_or(p.repetition_penalty);
        p.seed = self.seed.unwrap_or_else(rand_seed);
        p.logit_bias = match &self.logit_bias {
            None => Vec::new(),
            Some(map) => map
                .iter()
                .map(|(id, &bias)| match id.parse::<u32>() {
                    Ok(id) => Ok((id, bias)),
                    Err(_) => Err(ApiError::bad_request(format!("logit_bias keys are token ids; got {id:?}"))),
                })
                .collect::<Result<_, _>>()?,
        };
        if !(-2.0..=2.0).contains(&p.presence_penalty) || !(-2.0..=2.0).contains(&p.frequency_penalty) {
            return Err(ApiError::bad_request("presence_penalty and frequency_penalty must be in [-2, 2]"));
        }
        p.validate().map_err(ApiError::bad_request)?;
        Ok(p)
    }
}

/// OpenAI's `response_format`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat {
    #[serde(default)]
    pub name: String,
    /// Absent: any JSON value.
    pub schema: Option<Value>,
    /// OpenAI's strict mode; the schema is always enforced here.
    #[serde(default)]
    pub strict: Option<bool>,
}

/// What the output must follow: OpenAI's `response_format`, or vLLM's
/// `guided_*` fields; at most one of them.
#[derive(Debug, Default, Deserialize)]
pub struct GuidedFields {
    pub response_format: Option<ResponseFormat>,
    /// A JSON schema (an object, or the schema as a JSON string).
    pub guided_json: Option<Value>,
    pub guided_regex: Option<String>,
    pub guided_choice: Option<Vec<String>>,
    /// A Lark grammar (llguidance's dialect).
    pub guided_grammar: Option<String>,
}

impl GuidedFields {
    pub fn grammar(&self) -> Result<Option<Grammar>, ApiError> {
        let schema = |v: &Value| match v {
            Value::String(s) => serde_json::from_str(s)
                .map_err(|e| ApiError::bad_request(format!("guided_json is not a JSON schema: {e}"))),
            v => Ok(v.clone()),
        };
        let mut given = Vec::new();
        match &self.response_format {
            None | Some(ResponseFormat::Text) => {}
            Some(ResponseFormat::JsonObject) => given.push(Grammar::JsonObject),
            Some(ResponseFormat::JsonSchema { json_schema }) => given.push(match &json_schema.schema {
                Some(s) => Grammar::JsonSchema(s.clone()),
                None => Grammar::JsonSchema(serde_json::json!({})),
            }),
        }
        if let Some(v) = &self.guided_json {
            given.push(Grammar::JsonSchema(schema(v)?));
        }
        if let Some(r) = &self.guided_regex {
            given.push(Grammar::Regex(r.clone()));
        }
        if let Some(c) = &self.guided_choice {
            given.push(Grammar::Choice(c.clone()));
        }
        if let Some(g) = &self.guided_grammar {
            given.push(Grammar::Lark(g.clone()));
        }
        match given.len() {
            0 | 1 => Ok(given.pop()),
            _ => Err(ApiError::bad_request(
                "give at most one of response_format, guided_json, guided_regex, guided_choice and guided_grammar",
            )),
        }
    }
}

/// A seed for requests that give none: different per request.
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Prompt,
    pub max_tokens: Option<i64>,
    pub n: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub stop: Option<Stop>,
    pub logprobs: Option<i64>,
    /// Return the prompt before the completion.
    #[serde(default)]
    pub echo: bool,
    /// Sample this many and return the `n` most likely (cumulative logprob).
    pub best_of: Option<i64>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    #[serde(flatten)]
    pub guided: GuidedFields,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Content>,
    /// An assistant's calls, as the API returned them.
    #[serde(default)]
    pub tool_calls: Vec<MessageToolCall>,
    /// The call a tool message answers.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct MessageToolCall {
    pub id: Option<String>,
    pub function: CalledFunction,
}

#[derive(Debug, Deserialize)]
pub struct CalledFunction {
    pub name: String,
    /// JSON text, as OpenAI sends it.
    #[serde(default)]
    pub arguments: String,
}

/// The roles OpenAI's chat API defines ("function" is its deprecated tool role).
pub const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];

impl ChatMessage {
    /// The message's role, if it is one the API defines; message `i` is named in the error.
    pub fn role(&self, i: usize) -> Result<&str, ApiError> {
        if ROLES.contains(&self.role.as_str()) {
            return Ok(&self.role);
        }
        Err(ApiError::bad_request(format!(
            "messages[{i}].role must be one of {}; got {:?}",
            ROLES.join(", "),
            self.role
        )))
    }

    /// The message as chat templates read it: tool calls with their
    /// arguments as JSON objects (transformers' convention).
    pub fn to_template(&self, i: usize) -> Result<Message, ApiError> {
        let mut m = Message::new(self.role(i)?, &self.text()?);
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self
                .tool_calls
                .iter()
                .map(|c| {
                    let args = serde_json::from_str::<Value>(&c.function.arguments)
                        .unwrap_or_else(|_| Value::String(c.function.arguments.clone()));
                    serde_json::json!({"id": c.id, "type": "function",
                                       "function": {"name": c.function.name, "arguments": args}})
                })
                .collect();
            m.tool_calls = Some(Value::Array(calls));
        }
        m.tool_call_id = self.tool_call_id.clone();
        m.name = self.name.clone();
        Ok(m)
    }

    pub fn text(&self) -> Result<String, ApiError> {
        match &self.content {
            None => Ok(String::new()),
            Some(Content::Text(t)) => Ok(t.clone()),
            Some(Content::Parts(parts)) => parts
                .iter()
                .map(|p| match p.kind.as_str() {
                    "text" => Ok(p.text.as_str()),
                    other => Err(ApiError::bad_request(format!("content parts of type {other:?} are not supported"))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|t| t.concat()),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub n: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<i64>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    #[serde(flatten)]
    pub guided: GuidedFields,
    #[serde(default)]
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one answer (default true).
    pub parallel_tool_calls: Option<bool>,
}

/// A positive max_tokens, or the default.
pub fn max_tokens(given: Option<i64>, default: usize) -> Result<usize, ApiError> {
    match given {
        None => Ok(default),
        Some(n) if n >= 1 => Ok(n as usize),
        Some(n) => Err(ApiError::bad_request(format!("max_tokens must be at least 1, got {n}"))),
    }
}

/// 0..=20 alternatives per token, as OpenAI allows.
pub fn top_logprobs(n: Option<i64>) -> Result<Option<usize>, ApiError> {
    match n {
        None => Ok(None),
        Some(n @ 0..=20) => Ok(Some(n as usize)),
        Some(n) => Err(ApiError::bad_request(format!("logprobs must be between 0 and 20, got {n}"))),
    }
}
