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

use super::handlers::{AppState, finish_reason, logprobs_json, shutting_down, unix_now};

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
        let mut text_len = vec![0usize; job.prompts.len() * job.n];
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
            let piece = match event {
                Event::Token { token, text, logprobs } => {
                    let lp = logprobs.map(|lp| logprobs_json(&state, job.chat, &[(token, lp, text_len[index])]));
                    text_len[index] += text.len();
                    if job.chat {
                        chunk(
                            json!({"index": index, "delta": {"content": text}, "logprobs": lp, "finish_reason": null}),
                        )
                    } else {
                        chunk(json!({"index": index, "text": text, "logprobs": lp, "finish_reason": null}))
                    }
                }
                Event::Finished { reason, prompt_tokens: p, completion_tokens: c, text_tail } => {
                    if index % job.n == 0 {
                        prompt_tokens += p;
                    }
                    completion_tokens += c;
                    let reason = finish_reason(reason);
                    if job.chat {
                        chunk(
                            json!({"index": index, "delta": {"content": text_tail}, "logprobs": null, "finish_reason": reason}),
                        )
                    } else {
                        chunk(json!({"index": index, "text": text_tail, "logprobs": null, "finish_reason": reason}))
                    }
                }
                Event::Error(message) => server_error(&message),
            };
            if send(piece).await.is_err() {
                return; // the client went away
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
