//! The OpenAI-compatible side of `ferrum bench`: streamed completions over
//! HTTP, timing each server-sent event.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::stats::RequestRecord;
use super::workload::Workload;

pub struct Target {
    base: String,
    api_key: Option<String>,
    pub model: String,
    /// Vocabulary size when the server says (Ferrum does), for synthetic prompts.
    pub vocab_size: Option<usize>,
    agent: ureq::Agent,
}

impl Target {
    /// Checks the server answers and finds the model id to use.
    pub fn connect(url: &str, api_key: Option<String>, model: Option<String>) -> Result<Self> {
        let base = url.trim_end_matches('/').trim_end_matches("/v1").to_string();
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build();
        let mut req = agent.get(&format!("{base}/v1/models"));
        if let Some(k) = &api_key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let models: Value = req.call().with_context(|| format!("GET {base}/v1/models"))?.into_json()?;
        let model = match model {
            Some(m) => m,
            None => models["data"][0]["id"].as_str().context("the server lists no model")?.to_string(),
        };
        let vocab_size = models["data"][0]["vocab_size"].as_u64().map(|v| v as usize);
        Ok(Target { base, api_key, model, vocab_size, agent })
    }

    /// The counters of the server's `/metrics` (Ferrum's; others give none).
    pub fn counters(&self) -> Vec<(String, f64)> {
        let Ok(response) = self.agent.get(&format!("{}/metrics", self.base)).call() else { return Vec::new() };
        super::parse_counters(&response.into_string().unwrap_or_default())
    }

    pub fn send(&self, w: &Workload) -> RequestRecord {
        let mut record = RequestRecord { prompt_tokens: w.prompt.len(), ..Default::default() };
        if let Err(e) = self.stream(w, &mut record) {
            record.ok = false;
            record.error = Some(format!("{e:#}"));
        }
        record
    }

    fn stream(&self, w: &Workload, record: &mut RequestRecord) -> Result<()> {
        let body = json!({
            "model": self.model, "prompt": w.prompt, "max_tokens": w.max_tokens, "temperature": 0.0,
            "stream": true, "ignore_eos": true, "stream_options": {"include_usage": true},
        });
        let mut req = self.agent.post(&format!("{}/v1/completions", self.base));
        if let Some(k) = &self.api_key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let sent = Instant::now();
        let response = req.send_json(body)?;
        let mut last = sent;
        let mut usage_tokens = None;
        for line in BufReader::new(response.into_reader()).lines() {
            let line = line?;
            let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
            if data == "[DONE]" {
                break;
            }
            let chunk: Value = serde_json::from_str(data).context("a server-sent event is not JSON")?;
            if let Some(err) = chunk.get("error") {
                anyhow::bail!("server error: {err}");
            }
            if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
                usage_tokens = Some(n as usize);
            }
            let is_token =
                chunk["choices"].as_array().is_some_and(|c| !c.is_empty() && c[0]["finish_reason"].is_null());
            if is_token {
                let now = Instant::now();
                if record.output_tokens == 0 {
                    record.ttft = now.duration_since(sent).as_secs_f64();
                } else {
                    record.itl.push(now.duration_since(last).as_secs_f64());
                }
                last = now;
                record.output_tokens += 1;
            }
        }
        record.output_tokens = usage_tokens.unwrap_or(record.output_tokens);
        record.e2e = last.duration_since(sent).as_secs_f64();
        record.ok = record.output_tokens > 0;
        Ok(())
    }
}
