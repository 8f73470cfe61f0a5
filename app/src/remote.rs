//! A server watched and chatted with over HTTP: `ferrum serve` or any
//! OpenAI-compatible one. A thread of its own scrapes `/metrics` once a
//! second (Ferrum's counters; other servers give what they give) and sends
//! chats as streamed `/v1/chat/completions`, reading the server-sent events
//! line by line.

use std::io::{BufRead, BufReader};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use crate::worker::Repaint;

/// One scrape of a Ferrum server's `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RemoteSample {
    pub at: f64,
    pub tokens_per_sec: f64,
    /// mean time to first token since the last scrape, seconds
    pub ttft: f64,
    pub queue: f64,
    pub kv_blocks: f64,
    pub running: f64,
}

pub enum RemoteCommand {
    Watch { url: String, key: String },
    Unwatch,
    Chat { url: String, key: String, model: String, messages: Vec<(String, String)> },
}

pub enum RemoteEvent {
    Sample(RemoteSample),
    /// the scrape failed (the server is down, or no Ferrum)
    Unreachable(String),
    Models(Vec<String>),
    Token(String),
    ChatDone,
    ChatError(String),
}

/// The counters a sample is made of, summed over label sets.
fn counter(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else { continue };
        let key_name = key.split('{').next().unwrap_or(key);
        if key_name == name {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

/// The UI's end of the remote thread.
pub struct Remote {
    pub commands: Sender<RemoteCommand>,
    pub events: Receiver<RemoteEvent>,
}

pub fn start(repaint: Repaint) -> Remote {
    let (commands, rx) = channel();
    let (tx, events) = channel();
    std::thread::Builder::new()
        .name("ferrum-app-remote".into())
        .spawn(move || run(rx, tx, repaint))
        .expect("the remote thread starts");
    Remote { commands, events }
}

fn run(rx: Receiver<RemoteCommand>, tx: Sender<RemoteEvent>, repaint: Repaint) {
    let agent =
        ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).timeout_connect(Duration::from_secs(3)).build();
    let started = Instant::now();
    let mut watching: Option<(String, String)> = None;
    let mut last: Option<(Instant, f64, f64, f64)> = None; // when, tokens, ttft sum, ttft count
    let send = |e: RemoteEvent| {
        let _ = tx.send(e);
        repaint();
    };
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(RemoteCommand::Watch { url, key }) => {
                let models = get(&agent, &format!("{}/v1/models", base(&url)), &key)
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()));
                match models {
                    Ok(v) => {
                        let ids = v["data"].as_array().map_or(Vec::new(), |d| {
                            d.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect()
                        });
                        send(RemoteEvent::Models(ids));
                    }
                    Err(e) => send(RemoteEvent::Unreachable(e)),
                }
                watching = Some((url, key));
                last = None;
            }
            Ok(RemoteCommand::Unwatch) => watching = None,
            Ok(RemoteCommand::Chat { url, key, model, messages }) => {
                // on a thread of its own, so the scrapes go on while it streams
                let (agent, tx, repaint) = (agent.clone(), tx.clone(), repaint.clone());
                std::thread::spawn(move || {
                    let send = |e: RemoteEvent| {
                        let _ = tx.send(e);
                        repaint();
                    };
                    match chat(&agent, &url, &key, &model, &messages, |t| send(RemoteEvent::Token(t))) {
                        Ok(()) => send(RemoteEvent::ChatDone),
                        Err(e) => send(RemoteEvent::ChatError(e)),
                    }
                });
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let Some((url, key)) = &watching else { continue };
        match get(&agent, &format!("{}/metrics", base(url)), key) {
            Ok(text) => {
                let now = Instant::now();
                let tokens = counter(&text, "ferrum_generation_tokens_total").unwrap_or(0.0);
                let ttft_sum = counter(&text, "ferrum_time_to_first_token_seconds_sum").unwrap_or(0.0);
                let ttft_n = counter(&text, "ferrum_time_to_first_token_seconds_count").unwrap_or(0.0);
                if let Some((then, t0, s0, n0)) = last {
                    let dt = now.duration_since(then).as_secs_f64().max(1e-3);
                    send(RemoteEvent::Sample(RemoteSample {
                        at: now.duration_since(started).as_secs_f64(),
                        tokens_per_sec: (tokens - t0) / dt,
                        ttft: if ttft_n > n0 { (ttft_sum - s0) / (ttft_n - n0) } else { 0.0 },
                        queue: counter(&text, "ferrum_queue_depth").unwrap_or(0.0),
                        kv_blocks: counter(&text, "ferrum_kv_blocks_used").unwrap_or(0.0),
                        running: counter(&text, "ferrum_running_sequences").unwrap_or(0.0),
                    }));
                }
                last = Some((now, tokens, ttft_sum, ttft_n));
            }
            Err(e) => send(RemoteEvent::Unreachable(e)),
        }
    }
}

/// The server's root, whether the user gave it with `/v1` or not.
fn base(url: &str) -> String {
    url.trim().trim_end_matches('/').trim_end_matches("/v1").to_string()
}

fn get(agent: &ureq::Agent, url: &str, key: &str) -> Result<String, String> {
    let mut req = agent.get(url);
    if !key.is_empty() {
        req = req.set("Authorization", &format!("Bearer {key}"));
    }
    req.call().map_err(|e| e.to_string())?.into_string().map_err(|e| e.to_string())
}

/// A streamed chat completion: each content delta to `on_text`.
fn chat(
    agent: &ureq::Agent,
    url: &str,
    key: &str,
    model: &str,
    messages: &[(String, String)],
    mut on_text: impl FnMut(String),
) -> Result<(), String> {
    let messages: Vec<_> = messages.iter().map(|(r, c)| serde_json::json!({"role": r, "content": c})).collect();
    let mut req = agent.post(&format!("{}/v1/chat/completions", base(url)));
    if !key.is_empty() {
        req = req.set("Authorization", &format!("Bearer {key}"));
    }
    let body = serde_json::json!({"model": model, "messages": messages, "stream": true});
    let response = req.set("Content-Type", "application/json").send_string(&body.to_string()).map_err(|e| match e {
        ureq::Error::Status(code, r) => format!("{code}: {}", r.into_string().unwrap_or_default()),
        other => other.to_string(),
    })?;
    for line in BufReader::new(response.into_reader()).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
        if let Some(e) = v.get("error") {
            return Err(e["message"].as_str().unwrap_or("server error").to_string());
        }
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str().filter(|t| !t.is_empty()) {
            on_text(t.to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_their_labels() {
        let text = "# HELP x\nferrum_requests_total{status=\"ok\"} 3\nferrum_requests_total{status=\"aborted\"} 2\n\
                    ferrum_queue_depth 7\nferrum_queue_depth_other 1\n";
        assert_eq!(counter(text, "ferrum_requests_total"), Some(5.0));
        assert_eq!(counter(text, "ferrum_queue_depth"), Some(7.0));
        assert_eq!(counter(text, "missing"), None);
        assert_eq!(base("http://h:8000/v1/"), "http://h:8000");
    }
}
