//! Serving metrics, rendered in Prometheus' text format. The engine and the
//! server update them; `/metrics` renders them.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latency buckets in seconds (upper bounds).
const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Debug, Default)]
pub struct Histogram {
    inner: Mutex<(Vec<u64>, f64, u64)>, // (bucket counts, sum, count)
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        let mut h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if h.0.is_empty() {
            h.0 = vec![0; BUCKETS.len()];
        }
        for (i, &b) in BUCKETS.iter().enumerate() {
            if seconds <= b {
                h.0[i] += 1;
            }
        }
        h.1 += seconds;
        h.2 += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", h.0.get(i).copied().unwrap_or(0));
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", h.2, h.1, h.2);
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests_ok: AtomicU64,
    pub requests_client_error: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub requests_server_error: AtomicU64,
    pub requests_aborted: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub queue_depth: AtomicU64,
    pub running: AtomicU64,
    pub kv_blocks_used: AtomicU64,
    pub kv_blocks_free: AtomicU64,
    pub prefix_cache_hit_blocks: AtomicU64,
    pub prefix_cache_query_blocks: AtomicU64,
    pub preemptions: AtomicU64,
    pub failed_steps: AtomicU64,
    /// The KV cache's size, and the dtype it holds.
    pub kv_cache_bytes: AtomicU64,
    pub kv_cache_dtype: std::sync::OnceLock<String>,
    /// Speculative decoding: tokens guessed, guesses the model kept, and
    /// the steps that verified guesses.
    pub spec_guessed_tokens: AtomicU64,
    pub spec_accepted_tokens: AtomicU64,
    pub spec_steps: AtomicU64,
    /// HTTP connections open (the server's share of these metrics).
    pub open_connections: AtomicU64,
    /// 1 while the engine runs, 0 once it has stopped for good.
    pub healthy: AtomicU64,
    pub ttft: Histogram,
    pub inter_token: Histogram,
    pub e2e: Histogram,
    /// Each step: schedule, forward pass, sampling.
    pub step: Histogram,
    /// Per step with grammars: computing their masks (beside the forward pass).
    pub grammar_mask: Histogram,
    /// Per step with grammars: how long the step waited for the masks
    /// after its forward pass finished.
    pub grammar_wait: Histogram,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP ferrum_requests_total Finished requests by outcome.\n# TYPE ferrum_requests_total counter"
        );
        for (status, c) in [
            ("ok", &self.requests_ok),
            ("client_error", &self.requests_client_error),
            ("rejected", &self.requests_rejected),
            ("server_error", &self.requests_server_error),
            ("aborted", &self.requests_aborted),
        ] {
            let _ = writeln!(out, "ferrum_requests_total{{status=\"{status}\"}} {}", get(c));
        }
        for (name, kind, help, v) in [
            ("ferrum_prompt_tokens_total", "counter", "Prompt tokens admitted.", &self.prompt_tokens),
            ("ferrum_generation_tokens_total", "counter", "Tokens generated.", &self.generation_tokens),
            ("ferrum_queue_depth", "gauge", "Requests waiting to start.", &self.queue_depth),
            ("ferrum_running_sequences", "gauge", "Sequences being processed.", &self.running),
            ("ferrum_kv_blocks_used", "gauge", "KV cache blocks owned by sequences.", &self.kv_blocks_used),
            ("ferrum_kv_blocks_free", "gauge", "KV cache blocks free.", &self.kv_blocks_free),
            (
                "ferrum_prefix_cache_hit_blocks_total",
                "counter",
                "Prompt blocks found in the prefix cache.",
                &self.prefix_cache_hit_blocks,
            ),
            (
                "ferrum_prefix_cache_query_blocks_total",
                "counter",
                "Prompt blocks looked up in the prefix cache.",
                &self.prefix_cache_query_blocks,
            ),
            (
                "ferrum_preemptions_total",
                "counter",
                "Sequences preempted (recomputed later) for want of KV blocks.",
                &self.preemptions,
            ),
            (
                "ferrum_failed_steps_total",
                "counter",
                "Forward passes that failed and were retried one sequence at a time.",
                &self.failed_steps,
            ),
            (
                "ferrum_spec_guessed_tokens_total",
                "counter",
                "Speculative decoding: tokens guessed by prompt lookup.",
                &self.spec_guessed_tokens,
            ),
            (
                "ferrum_spec_accepted_tokens_total",
                "counter",
                "Speculative decoding: guessed tokens the model kept.",
                &self.spec_accepted_tokens,
            ),
            (
                "ferrum_spec_steps_total",
                "counter",
                "Speculative decoding: steps in which a sequence verified guesses.",
                &self.spec_steps,
            ),
            ("ferrum_open_connections", "gauge", "HTTP connections open.", &self.open_connections),
            ("ferrum_engine_healthy", "gauge", "1 while the engine runs, 0 once it has stopped.", &self.healthy),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", get(v));
        }
        let dtype = self.kv_cache_dtype.get().map_or("f32", String::as_str);
        let _ = writeln!(
            out,
            "# HELP ferrum_kv_cache_bytes The KV cache's size, by the dtype it holds.\n# TYPE ferrum_kv_cache_bytes gauge\n\
             ferrum_kv_cache_bytes{{dtype=\"{dtype}\"}} {}",
            get(&self.kv_cache_bytes)
        );
        self.ttft.render(&mut out, "ferrum_time_to_first_token_seconds", "Time from arrival to the first token.");
        self.inter_token.render(&mut out, "ferrum_inter_token_latency_seconds", "Time between tokens of a sequence.");
        self.e2e.render(&mut out, "ferrum_e2e_request_latency_seconds", "Time from arrival to the last token.");
        self.step.render(&mut out, "ferrum_step_seconds", "Engine steps: schedule, forward pass, sampling.");
        self.grammar_mask.render(
            &mut out,
            "ferrum_grammar_mask_seconds",
            "Steps with grammars: computing their token masks, beside the forward pass.",
        );
        self.grammar_wait.render(
            &mut out,
            "ferrum_grammar_wait_seconds",
            "Steps with grammars: waiting for the masks after the forward pass.",
        );
        out
    }
}
