//! Server-sent events for a streamed request, as OpenAI streams them.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use ferrum_engine::serving::Event;

use ferrum_api::Job;
use ferrum_api::tools::{Piece, ToolStream};
use ferrum_engine::generate::FinishReason;

use super::handlers::{AppState, finish_reason, logprobs_json, shutting_down, tool_call_json, unix_now};

/// Server-sent events: one chunk per token per choice, a last chunk with the
/// finish reason, optional usage, then `[DONE]`. A client that goes away
/// (or stops reading, and is cut off by the write timeout) drops the stream,
/// which drops the engine receivers, which frees the KV blocks. Shutdown
/// ends a stream still running with an error event.
pub fn stream(
    state: Arc<AppState>,
    job: Job,
    id: String,
    receivers: Vec<mpsc::UnboundedReceiver<Event>>,
) -> impl IntoResponse {
    let (merged_tx, mut merged_rx) = mpsc::channel::<(usize, Event)>(64);
    for (index, mut rx) in receivers.into_iter().enumerate() {
        let tx = merged_tx.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                let last = !matches!(e, Event::Token { .. });
                if tx.send((index, e)).await.is_err() || last {
                    return;
                }
            }
        });
    }
    drop(merged_tx);
    let (out_tx, out_rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let created = unix_now();
        let object = if job.chat { "chat.completion.chunk" } else { "text_completion" };
        let chunk = |choice: Value| json!({"id": id, "object": object, "created": created, "model": state.served.model_name, "choices": [choice]});
        let send = |v: Value| out_tx.send(Ok(SseEvent::default().data(v.to_string())));
        let (mut prompt_tokens, mut completion_tokens) = (0, 0);
        if job.chat {
            for index in 0..job.prompts.len() * job.n {
                let first = chunk(json!({"index": index, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": null, "finish_reason": null}));
                if send(first).await.is_err() {
                    return;
                }
            }
        }
        let choices = job.prompts.len() * job.n;
        if let Some(echo) = &job.echo {
            for index in 0..choices {
                let first = chunk(
                    json!({"index": index, "text": echo[index / job.n], "logprobs": null, "finish_reason": null}),
                );
                if send(first).await.is_err() {
                    return;
                }
            }
        }
        let mut text_len = vec![0usize; choices];
        // with tools, each choice's text goes through a call finder
        let mut finders: Vec<Option<ToolStream>> = (0..choices).map(|_| job.tools.map(ToolStream::new)).collect();
        let mut calls_sent = vec![0usize; choices];
        let mut ending = state.ending.clone();
        loop {
            let next = tokio::select! {
                next = merged_rx.recv() => next,
                () = shutting_down(&mut ending) => {
                    let _ = send(server_error("the server is shutting down")).await;
                    return;
                }
            };
            let Some((index, event)) = next else { break };
            // a chat delta: words, or a whole tool call
            let mut deltas = |pieces: Vec<Piece>| -> Vec<Value> {
                pieces
                    .into_iter()
                    .map(|p| match p {
                        Piece::Content(text) => json!({"content": text}),
                        Piece::Call(call) => {
                            calls_sent[index] += 1;
                            json!({"tool_calls": [tool_call_json(&call, Some(calls_sent[index] - 1))]})
                        }
                    })
                    .collect()
            };
            let pieces: Vec<Value> = match event {
                Event::Token { token, text, logprobs } => {
                    let lp = logprobs.map(|lp| logprobs_json(&state, job.chat, &[(token, lp, text_len[index])]));
                    text_len[index] += text.len();
                    if !job.chat {
                        vec![chunk(json!({"index": index, "text": text, "logprobs": lp, "finish_reason": null}))]
                    } else {
                        let mut out = match finders[index].as_mut() {
                            Some(finder) => deltas(finder.push(&text)),
                            None => vec![json!({"content": text})],
                        };
                        if out.is_empty() && lp.is_some() {
                            out.push(json!({"content": ""})); // held back, but its logprobs go now
                        }
                        let mut lp = lp;
                        out.into_iter()
                            .map(|delta| {
                                let lp = lp.take();
                                chunk(json!({"index": index, "delta": delta, "logprobs": lp, "finish_reason": null}))
                            })
                            .collect()
                    }
                }
                Event::Finished { reason, prompt_tokens: p, completion_tokens: c, text_tail } => {
                    if index % job.n == 0 {
                        prompt_tokens += p;
                    }
                    completion_tokens += c;
                    let mut name = finish_reason(reason);
                    if !job.chat {
                        vec![chunk(json!({"index": index, "text": text_tail, "logprobs": null, "finish_reason": name}))]
                    } else {
                        let mut out = match finders[index].as_mut() {
                            Some(finder) => {
                                let mut pieces = finder.push(&text_tail);
                                pieces.extend(finder.finish());
                                deltas(pieces)
                            }
                            None => vec![json!({"content": text_tail})],
                        };
                        if calls_sent[index] > 0 && reason == FinishReason::Stop {
                            name = "tool_calls";
                        }
                        let last = out.pop().unwrap_or_else(|| json!({"content": ""}));
                        let mut chunks: Vec<Value> = out
                            .into_iter()
                            .map(|d| {
                                chunk(json!({"index": index, "delta": d, "logprobs": null, "finish_reason": null}))
                            })
                            .collect();
                        chunks.push(chunk(
                            json!({"index": index, "delta": last, "logprobs": null, "finish_reason": name}),
                        ));
                        chunks
                    }
                }
                Event::Error(message) => vec![server_error(&message)],
            };
            for piece in pieces {
                if send(piece).await.is_err() {
                    return; // the client went away
                }
            }
        }
        if job.include_usage {
            let usage = json!({"id": id, "object": object, "created": created, "model": state.served.model_name, "choices": [],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}});
            let _ = send(usage).await;
        }
        let _ = out_tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Sse::new(ReceiverStream::new(out_rx)).keep_alive(KeepAlive::default())
}

/// The error event of a stream, in OpenAI's error shape.
fn server_error(message: &str) -> Value {
    json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
}
