//! The endpoints: models, completions, chat completions (streamed as
//! server-sent events by `stream.rs`, or whole), health and metrics.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use ferrum_api::tools::{self, ParsedCall};
use ferrum_api::{ApiError, Job, Served};
use ferrum_engine::generate::FinishReason;
use ferrum_engine::serving::{EngineHandle, Event, Metrics, SubmitError, TokenLogprobs};

use super::stream::stream;

pub struct AppState {
    pub engine: EngineHandle,
    /// The model, its tokenizer and template, and the request limits.
    pub served: Served,
    pub api_key: Option<String>,
    pub created: u64,
    pub max_body_bytes: usize,
    /// How long a client has to send its whole request body.
    pub body_timeout: Duration,
    /// Turns true when shutdown ends the requests still running.
    pub ending: watch::Receiver<bool>,
}

type Shared = State<Arc<AppState>>;

impl AppState {
    fn metrics(&self) -> &Metrics {
        &self.engine.metrics
    }

    /// The API key, when the server has one.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(key) = &self.api_key {
            let given = headers.get(header::AUTHORIZATION).map_or(&[][..], |v| v.as_bytes());
            if !same_secret(given, format!("Bearer {key}").as_bytes()) {
                return Err(ApiError::unauthorized());
            }
        }
        Ok(())
    }

    fn token_text(&self, id: u32) -> String {
        self.served.tokenizer.as_ref().and_then(|t| t.decode(&[id], false).ok()).unwrap_or_else(|| format!("<{id}>"))
    }

    /// Counts the outcome of a request in the metrics.
    fn record<T>(&self, result: Result<T, ApiError>) -> Result<T, ApiError> {
        let m = self.metrics();
        match &result {
            Ok(_) => Metrics::add(&m.requests_ok, 1),
            Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => Metrics::add(&m.requests_rejected, 1),
            Err(e) if e.status.is_client_error() => Metrics::add(&m.requests_client_error, 1),
            Err(_) => Metrics::add(&m.requests_server_error, 1),
        }
        result
    }
}

/// Whether two secrets are equal, in time that depends on neither: the
/// digests are compared byte by byte without an early exit.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A request's body read within the body timeout and size bound, with slow
/// or oversized bodies as OpenAI errors.
async fn read_request_body(state: &AppState, body: Body) -> Result<Vec<u8>, ApiError> {
    match tokio::time::timeout(state.body_timeout, read_body(body, state.max_body_bytes)).await {
        Err(_) => Err(ApiError::timeout(format!("the request body took longer than {:?}", state.body_timeout))),
        Ok(read) => read,
    }
}

/// The most of an oversized body read (and dropped) before answering 413:
/// a client still sending when the server closes gets a reset, which
/// destroys the answer before it reads it. Past this the connection is cut.
const DRAIN_BYTES: usize = 64 << 20;

async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            bytes.extend_from_slice(&data);
        } else if seen > DRAIN_BYTES {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::too_large(format!("the body is larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// Resolves once shutdown ends the requests still running.
pub(super) async fn shutting_down(ending: &mut watch::Receiver<bool>) {
    if ending.wait_for(|e| *e).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// 200 while the engine runs; 503 with the reason once it has stopped, so a
/// load balancer moves away.
pub async fn health(State(state): Shared) -> Response {
    match state.engine.broken() {
        None => "ok".into_response(),
        Some(reason) => ApiError::stopped(reason).into_response(),
    }
}

pub async fn metrics(State(state): Shared) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics().render())
}

impl AppState {
    /// The served model as `/v1/models` lists it.
    fn model_card(&self) -> Value {
        json!({"id": self.served.model_name, "object": "model", "created": self.created, "owned_by": "ferrum",
               "max_model_len": self.engine.max_context, "vocab_size": self.engine.vocab_size})
    }
}

pub async fn models(State(state): Shared, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers)?;
    Ok(Json(json!({"object": "list", "data": [state.model_card()]})))
}

/// `/v1/models/{id}`: the served model, or 404.
pub async fn model(State(state): Shared, Path(id): Path<String>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers)?;
    if id != state.served.model_name {
        return Err(ApiError::model_not_found(&id, &state.served.model_name));
    }
    Ok(Json(state.model_card()))
}

pub async fn completions(State(state): Shared, headers: HeaderMap, body: Body) -> Response {
    let job = match state.authorize(&headers) {
        Ok(()) => read_request_body(&state, body).await.and_then(|b| state.served.completion_job(&b)),
        Err(e) => Err(e),
    };
    respond(state, job).await
}

pub async fn chat_completions(State(state): Shared, headers: HeaderMap, body: Body) -> Response {
    let job = match state.authorize(&headers) {
        Ok(()) => read_request_body(&state, body).await.and_then(|b| state.served.chat_job(&b)),
        Err(e) => Err(e),
    };
    respond(state, job).await
}

/// Submits every choice (prompts x n), then streams or collects.
async fn respond(state: Arc<AppState>, job: Result<Job, ApiError>) -> Response {
    let job = match job {
        Ok(j) => j,
        Err(e) => return state.record::<()>(Err(e)).unwrap_err().into_response(),
    };
    // every choice or none
    let receivers: Vec<_> = match state.engine.submit_all(job.requests()) {
        Ok(accepted) => accepted.into_iter().map(|(_, rx)| rx).collect(),
        Err(e) => {
            let err = match e {
                SubmitError::QueueFull => ApiError::overloaded(),
                SubmitError::Invalid(m) => ApiError::bad_request(m),
                SubmitError::Stopped => ApiError::stopped(state.engine.broken().unwrap_or("shutting down")),
            };
            return state.record::<()>(Err(err)).unwrap_err().into_response();
        }
    };
    let id = format!("{}-{}", if job.chat { "chatcmpl" } else { "cmpl" }, next_id());
    if job.stream {
        Metrics::add(&state.metrics().requests_ok, 1);
        return stream(state, job, id, receivers).into_response();
    }
    let result = collect(&state, &job, &id, receivers).await;
    match state.record(result) {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A call as OpenAI returns it; `index` places it in a streamed delta.
pub(super) fn tool_call_json(call: &ParsedCall, index: Option<usize>) -> Value {
    let mut v = json!({"id": format!("call_{}", next_id()), "type": "function",
                       "function": {"name": call.name, "arguments": call.arguments}});
    if let Some(i) = index {
        v["index"] = json!(i);
    }
    v
}

pub(super) fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// One choice's tokens and text as they accumulate.
#[derive(Default)]
struct ChoiceState {
    text: String,
    logprobs: Vec<(u32, TokenLogprobs, usize)>, // token, logprobs, text offset
    finish: Option<FinishReason>,
    prompt_tokens: usize,
    completion_tokens: usize,
}

async fn collect(
    state: &AppState,
    job: &Job,
    id: &str,
    receivers: Vec<mpsc::UnboundedReceiver<Event>>,
) -> Result<Value, ApiError> {
    let mut choices = Vec::new();
    let mut ending = state.ending.clone();
    for mut rx in receivers {
        let mut c = ChoiceState::default();
        loop {
            let event = tokio::select! {
                event = rx.recv() => event,
                () = shutting_down(&mut ending) => return Err(ApiError::stopped("the server is shutting down")),
            };
            let Some(event) = event else { break };
            match event {
                Event::Token { token, text, logprobs } => {
                    if let Some(lp) = logprobs {
                        c.logprobs.push((token, lp, c.text.len()));
                    }
                    c.text.push_str(&text);
                }
                Event::Finished { reason, prompt_tokens, completion_tokens, text_tail } => {
                    c.text.push_str(&text_tail);
                    (c.finish, c.prompt_tokens, c.completion_tokens) = (Some(reason), prompt_tokens, completion_tokens);
                    break;
                }
                Event::Error(e) => return Err(ApiError::internal(e)),
            }
        }
        if c.finish.is_none() {
            return Err(ApiError::internal("the engine dropped the request"));
        }
        choices.push(c);
    }
    let prompt_tokens: usize = choices.iter().step_by(job.best_of).map(|c| c.prompt_tokens).sum();
    let completion_tokens: usize = choices.iter().map(|c| c.completion_tokens).sum();
    // best_of: each prompt's n most likely choices, by their tokens' summed logprob
    let kept: Vec<(usize, &ChoiceState)> = choices
        .chunks(job.best_of)
        .enumerate()
        .flat_map(|(prompt, group)| {
            let mut ranked: Vec<&ChoiceState> = group.iter().collect();
            if job.best_of > job.n {
                let score = |c: &ChoiceState| c.logprobs.iter().map(|(_, lp, _)| lp.logprob as f64).sum::<f64>();
                ranked.sort_by(|a, b| score(b).total_cmp(&score(a)));
            }
            ranked.into_iter().take(job.n).map(move |c| (prompt, c))
        })
        .collect();
    let rendered: Vec<Value> = kept
        .into_iter()
        .enumerate()
        .map(|(index, (prompt, c))| (index, prompt, c))
        .map(|(index, prompt, c)| {
            let mut reason = c.finish.map(finish_reason);
            let logprobs = job.request.logprobs.map(|_| logprobs_json(state, job.chat, &c.logprobs));
            if job.chat {
                let mut message = json!({"role": "assistant", "content": c.text});
                if let Some(syntax) = job.tools {
                    let (content, calls) = tools::parse(syntax, &c.text);
                    if !calls.is_empty() {
                        let calls: Vec<Value> = calls.iter().map(|call| tool_call_json(call, None)).collect();
                        let content = (!content.trim().is_empty()).then_some(content);
                        message = json!({"role": "assistant", "content": content, "tool_calls": calls});
                        if c.finish == Some(FinishReason::Stop) {
                            reason = Some("tool_calls");
                        }
                    }
                }
                json!({"index": index, "message": message, "logprobs": logprobs, "finish_reason": reason})
            } else {
                let echo = job.echo.as_ref().map_or("", |e| e[prompt].as_str());
                json!({"index": index, "text": format!("{echo}{}", c.text), "logprobs": logprobs, "finish_reason": reason})
            }
        })
        .collect();
    Ok(json!({
        "id": id,
        "object": if job.chat { "chat.completion" } else { "text_completion" },
        "created": unix_now(),
        "model": state.served.model_name,
        "choices": rendered,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }))
}

/// OpenAI's two logprobs shapes: chat's `content` list, completions' parallel arrays.
pub(super) fn logprobs_json(state: &AppState, chat: bool, items: &[(u32, TokenLogprobs, usize)]) -> Value {
    let text = |id: u32| state.token_text(id);
    if chat {
        let content: Vec<Value> = items
            .iter()
            .map(|(tok, lp, _)| {
                let t = text(*tok);
                let top: Vec<Value> = lp
                    .top
                    .iter()
                    .map(|(id, l)| {
                        let s = text(*id);
                        json!({"token": s, "logprob": l, "bytes": s.as_bytes()})
                    })
                    .collect();
                json!({"token": t, "logprob": lp.logprob, "bytes": t.as_bytes(), "top_logprobs": top})
            })
            .collect();
        json!({"content": content})
    } else {
        let tokens: Vec<String> = items.iter().map(|(t, _, _)| text(*t)).collect();
        let token_logprobs: Vec<f32> = items.iter().map(|(_, lp, _)| lp.logprob).collect();
        let top: Vec<Value> = items
            .iter()
            .map(|(_, lp, _)| Value::Object(lp.top.iter().map(|(id, l)| (text(*id), json!(l))).collect()))
            .collect();
        let offsets: Vec<usize> = items.iter().map(|(_, _, o)| *o).collect();
        json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets})
    }
}
