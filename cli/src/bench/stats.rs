//! Per-request timings and the summary `ferrum bench` prints: throughput,
//! TTFT, TPOT and ITL (mean, median, p90, p99), as vLLM's benchmark reports.

use serde_json::{Value, json};

/// What one request measured.
#[derive(Clone, Debug, Default)]
pub struct RequestRecord {
    pub ok: bool,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    /// seconds from sending to the first token
    pub ttft: f64,
    /// seconds between consecutive tokens
    pub itl: Vec<f64>,
    /// seconds from sending to the last token
    pub e2e: f64,
    pub error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub requests: usize,
    pub failed: usize,
    pub duration: f64,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub ttft: Percentiles,
    pub tpot: Percentiles,
    pub itl: Percentiles,
    pub e2e: Percentiles,
}

#[derive(Clone, Debug, Default)]
pub struct Percentiles {
    pub mean: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Percentiles {
    pub fn of(mut xs: Vec<f64>) -> Self {
        if xs.is_empty() {
            return Percentiles::default();
        }
        xs.sort_by(f64::total_cmp);
        let at = |q: f64| xs[((q * (xs.len() - 1) as f64).round() as usize).min(xs.len() - 1)];
        Percentiles { mean: xs.iter().sum::<f64>() / xs.len() as f64, median: at(0.5), p90: at(0.9), p99: at(0.99) }
    }

    fn json_ms(&self) -> Value {
        json!({"mean_ms": self.mean * 1e3, "median_ms": self.median * 1e3, "p90_ms": self.p90 * 1e3, "p99_ms": self.p99 * 1e3})
    }
}

impl Summary {
    pub fn of(records: &[RequestRecord], duration: f64) -> Self {
        let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.ok).collect();
        // time per output token after the first (vLLM's TPOT)
        let tpot = ok
            .iter()
            .filter(|r| r.output_tokens > 1)
            .map(|r| (r.e2e - r.ttft) / (r.output_tokens - 1) as f64)
            .collect();
        Summary {
            requests: ok.len(),
            failed: records.len() - ok.len(),
            duration,
            prompt_tokens: ok.iter().map(|r| r.prompt_tokens).sum(),
            output_tokens: ok.iter().map(|r| r.output_tokens).sum(),
            ttft: Percentiles::of(ok.iter().map(|r| r.ttft).collect()),
            tpot: Percentiles::of(tpot),
            itl: Percentiles::of(ok.iter().flat_map(|r| r.itl.iter().copied()).collect()),
            e2e: Percentiles::of(ok.iter().map(|r| r.e2e).collect()),
        }
    }

    pub fn output_tokens_per_sec(&self) -> f64 {
        self.output_tokens as f64 / self.duration
    }

    pub fn print(&self, title: &str) {
        println!("============ {title} ============");
        println!("{:<34}{:>12}", "successful requests", self.requests);
        println!("{:<34}{:>12}", "failed requests", self.failed);
        println!("{:<34}{:>12.2}", "benchmark duration (s)", self.duration);
        println!("{:<34}{:>12}", "prompt tokens", self.prompt_tokens);
        println!("{:<34}{:>12}", "generated tokens", self.output_tokens);
        println!("{:<34}{:>12.2}", "request throughput (req/s)", self.requests as f64 / self.duration);
        println!("{:<34}{:>12.2}", "output throughput (tok/s)", self.output_tokens_per_sec());
        println!(
            "{:<34}{:>12.2}",
            "total throughput (tok/s)",
            (self.prompt_tokens + self.output_tokens) as f64 / self.duration
        );
        println!("{:<34}{:>12}{:>12}{:>12}{:>12}", "latency (ms)", "mean", "median", "p90", "p99");
        for (name, p) in [("TTFT", &self.ttft), ("TPOT", &self.tpot), ("ITL", &self.itl), ("E2E", &self.e2e)] {
            println!(
                "{:<34}{:>12.2}{:>12.2}{:>12.2}{:>12.2}",
                name,
                p.mean * 1e3,
                p.median * 1e3,
                p.p90 * 1e3,
                p.p99 * 1e3
            );
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "successful_requests": self.requests,
            "failed_requests": self.failed,
            "duration_s": self.duration,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "request_throughput": self.requests as f64 / self.duration,
            "output_tokens_per_sec": self.output_tokens_per_sec(),
            "total_tokens_per_sec": (self.prompt_tokens + self.output_tokens) as f64 / self.duration,
            "ttft": self.ttft.json_ms(),
            "tpot": self.tpot.json_ms(),
            "itl": self.itl.json_ms(),
            "e2e": self.e2e.json_ms(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_list() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.mean, p.median, p.p90, p.p99), (50.5, 51.0, 90.0, 99.0));
    }

    #[test]
    fn tpot_excludes_the_first_token() {
        let r = RequestRecord { ok: true, output_tokens: 5, ttft: 1.0, e2e: 3.0, ..Default::default() };
        let s = Summary::of(&[r], 3.0);
        assert_eq!(s.tpot.mean, 0.5);
    }
}
