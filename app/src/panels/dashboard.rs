//! The dashboard: decode and prefill tokens/s and memory in use over time,
//! histograms of time to first token and time per token with p50/p95/p99,
//! a benchmark run from the app (lengths, concurrency) with its table, and
//! everything exported as CSV or JSON.

use std::collections::VecDeque;

use eframe::egui;
use egui_plot::{Bar, BarChart, Legend, Line, Plot, PlotPoints};

use crate::human_bytes;
use crate::worker::{BenchReport, BenchSpec, ChatStats, Command, Loaded, Sample, WorkerHandle};

/// How many samples the time series keep (half a second apart: ten minutes).
const KEEP: usize = 1200;

pub struct Dashboard {
    pub samples: VecDeque<Sample>,
    /// seconds, from chat answers and benchmark requests
    pub ttft: Vec<f64>,
    pub tpot: Vec<f64>,
    pub bench: BenchSpec,
    pub bench_running: bool,
    pub report: Option<Result<BenchReport, String>>,
    pub export_path: String,
    pub exported: Option<Result<String, String>>,
    pub weights: f64,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard {
            samples: VecDeque::new(),
            ttft: Vec::new(),
            tpot: Vec::new(),
            bench: BenchSpec { input_len: 128, output_len: 64, requests: 16, concurrency: 4 },
            bench_running: false,
            report: None,
            export_path: "ferrum-dashboard".into(),
            exported: None,
            weights: 0.0,
        }
    }
}

/// The `q` quantile of `xs` (nearest rank), 0 when empty.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
}

impl Dashboard {
    pub fn on_loaded(&mut self, l: &Loaded) {
        self.weights = l.weight_bytes as f64;
    }

    pub fn on_sample(&mut self, s: Sample) {
        self.samples.push_back(s);
        while self.samples.len() > KEEP {
            self.samples.pop_front();
        }
    }

    pub fn on_answer(&mut self, s: &ChatStats) {
        if s.completion_tokens > 0 {
            self.ttft.push(s.ttft);
        }
        if s.completion_tokens > 1 {
            self.tpot.push(s.tpot);
        }
    }

    pub fn on_bench(&mut self, r: Result<BenchReport, String>) {
        self.bench_running = false;
        if let Ok(r) = &r {
            for &(ttft, tpot) in &r.requests {
                self.ttft.push(ttft);
                if tpot > 0.0 {
                    self.tpot.push(tpot);
                }
            }
        }
        self.report = Some(r);
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, worker: &WorkerHandle, loaded: bool) {
        ui.heading("Dashboard");
        let series = |f: fn(&Sample) -> f64| -> Vec<[f64; 2]> { self.samples.iter().map(|s| [s.at, f(s)]).collect() };
        ui.label("Tokens per second");
        Plot::new("rates").height(160.0).legend(Legend::default()).show(ui, |p| {
            p.line(Line::new("decode tok/s", PlotPoints::from(series(|s| s.decode_tokens_per_sec))));
            p.line(Line::new("prefill tok/s", PlotPoints::from(series(|s| s.prefill_tokens_per_sec))));
        });
        ui.label(format!("Memory in use (weights {} + KV blocks in use)", human_bytes(self.weights)));
        Plot::new("memory").height(120.0).show(ui, |p| {
            p.line(Line::new("MiB", PlotPoints::from(series(|s| s.memory_bytes / (1 << 20) as f64))));
        });
        ui.columns(2, |cols| {
            histogram(&mut cols[0], "Time to first token (ms)", &self.ttft);
            histogram(&mut cols[1], "Time per output token (ms)", &self.tpot);
        });
        ui.separator();
        ui.heading("Benchmark");
        ui.horizontal(|ui| {
            ui.add(egui::DragValue::new(&mut self.bench.input_len).range(1..=8192).prefix("input "));
            ui.add(egui::DragValue::new(&mut self.bench.output_len).range(1..=8192).prefix("output "));
            ui.add(egui::DragValue::new(&mut self.bench.requests).range(1..=4096).prefix("requests "));
            ui.add(egui::DragValue::new(&mut self.bench.concurrency).range(1..=256).prefix("concurrency "));
            if ui.add_enabled(loaded && !self.bench_running, egui::Button::new("Run benchmark")).clicked() {
                self.bench_running = true;
                worker.send(Command::Bench(self.bench));
            }
            if self.bench_running {
                ui.add(egui::Spinner::new());
                ui.ctx().request_repaint();
            }
        });
        // a scope: the export row keeps its ids when the table arrives
        ui.scope(|ui| match &self.report {
            Some(Ok(r)) => bench_table(ui, r),
            Some(Err(e)) => {
                ui.colored_label(egui::Color32::from_rgb(220, 60, 60), format!("Error: {e}"));
            }
            None => {}
        });
        ui.horizontal(|ui| {
            let label = ui.label("Export to");
            ui.add(egui::TextEdit::singleline(&mut self.export_path).desired_width(240.0)).labelled_by(label.id);
            if ui.button("Export CSV").clicked() {
                self.exported = Some(self.export(false));
            }
            if ui.button("Export JSON").clicked() {
                self.exported = Some(self.export(true));
            }
        });
        match &self.exported {
            Some(Ok(path)) => ui.label(format!("wrote {path}")),
            Some(Err(e)) => ui.colored_label(egui::Color32::from_rgb(220, 60, 60), format!("Error: {e}")),
            None => ui.label(""),
        };
    }

    /// Writes the time series, the latencies and the benchmark to
    /// `export_path` with a .csv or .json extension; the path written.
    pub fn export(&self, json: bool) -> Result<String, String> {
        let path = format!("{}.{}", self.export_path.trim(), if json { "json" } else { "csv" });
        let text = if json {
            let samples: Vec<_> = self
                .samples
                .iter()
                .map(|s| {
                    serde_json::json!({"t": s.at, "decode_tokens_per_sec": s.decode_tokens_per_sec,
                    "prefill_tokens_per_sec": s.prefill_tokens_per_sec, "memory_bytes": s.memory_bytes})
                })
                .collect();
            let bench = self.report.as_ref().and_then(|r| r.as_ref().ok()).map(
                |r| serde_json::json!({"seconds": r.seconds, "output_tokens": r.output_tokens, "requests": r.requests}),
            );
            serde_json::json!({"samples": samples, "ttft_seconds": self.ttft, "tpot_seconds": self.tpot, "bench": bench})
                .to_string()
        } else {
            let mut csv = String::from("t,decode_tokens_per_sec,prefill_tokens_per_sec,memory_bytes\n");
            for s in &self.samples {
                csv +=
                    &format!("{},{},{},{}\n", s.at, s.decode_tokens_per_sec, s.prefill_tokens_per_sec, s.memory_bytes);
            }
            csv
        };
        std::fs::write(&path, text).map_err(|e| format!("{path}: {e}"))?;
        Ok(path)
    }
}

/// Latencies as a histogram in milliseconds, with p50/p95/p99 above it.
fn histogram(ui: &mut egui::Ui, title: &str, seconds: &[f64]) {
    let ms: Vec<f64> = seconds.iter().map(|s| s * 1000.0).collect();
    ui.label(format!(
        "{title}: p50 {:.1}, p95 {:.1}, p99 {:.1} ({} samples)",
        quantile(&ms, 0.5),
        quantile(&ms, 0.95),
        quantile(&ms, 0.99),
        ms.len()
    ));
    let (lo, hi) = (quantile(&ms, 0.0), quantile(&ms, 1.0));
    let bins = 20;
    let width = ((hi - lo) / bins as f64).max(1e-3);
    let mut counts = vec![0usize; bins];
    for &v in &ms {
        counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let bars: Vec<Bar> = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| Bar::new(lo + (i as f64 + 0.5) * width, c as f64).width(width))
        .collect();
    Plot::new(title).height(120.0).show(ui, |p| p.bar_chart(BarChart::new(title, bars)));
}

fn bench_table(ui: &mut egui::Ui, r: &BenchReport) {
    let ttft: Vec<f64> = r.requests.iter().map(|x| x.0 * 1000.0).collect();
    let tpot: Vec<f64> = r.requests.iter().filter(|x| x.1 > 0.0).map(|x| x.1 * 1000.0).collect();
    egui::Grid::new("bench").striped(true).show(ui, |ui| {
        for (k, v) in [
            ("requests", r.requests.len().to_string()),
            ("seconds", format!("{:.2}", r.seconds)),
            ("output tok/s", format!("{:.1}", r.output_tokens as f64 / r.seconds.max(1e-9))),
            (
                "TTFT p50 / p95 / p99 ms",
                format!("{:.1} / {:.1} / {:.1}", quantile(&ttft, 0.5), quantile(&ttft, 0.95), quantile(&ttft, 0.99)),
            ),
            (
                "TPOT p50 / p95 / p99 ms",
                format!("{:.2} / {:.2} / {:.2}", quantile(&tpot, 0.5), quantile(&tpot, 0.95), quantile(&tpot, 0.99)),
            ),
        ] {
            ui.label(k);
            ui.label(v);
            ui.end_row();
        }
    });
}
