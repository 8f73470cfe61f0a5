//! The compare panel, what no other app shows: the loaded model against
//! quantized variants of itself on the user's own text. One point per
//! format, KL divergence (or top-1 agreement, or perplexity) against decode
//! speed, sized by the memory it measured; the table below; and the text
//! coloured token by token by the KL of a chosen format, so the user sees
//! where it hurts.

use eframe::egui;
use egui_plot::{Legend, Plot, PlotPoints, Points};

use crate::files::{FileKind, FilePicker};
use crate::human_bytes;
use crate::panels::model::QUANTS;
use crate::worker::{Command, CompareSpec, Comparison, WorkerHandle};

/// What the scatter's vertical axis shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accuracy {
    KlMean,
    Top1,
    Perplexity,
}

pub struct ComparePanel {
    pub text: String,
    /// per entry of [`QUANTS`] (none excluded): compare it
    pub chosen: Vec<bool>,
    pub ctx: usize,
    pub windows: usize,
    pub axis: Accuracy,
    pub progress: Option<f32>,
    pub result: Option<Result<Comparison, String>>,
    /// the row whose KL colours the text
    pub shown: usize,
}

impl Default for ComparePanel {
    fn default() -> Self {
        let mut chosen = vec![false; QUANTS.len()];
        chosen[7] = true; // nvfp4
        ComparePanel {
            text: String::new(),
            chosen,
            ctx: 256,
            windows: 2,
            axis: Accuracy::KlMean,
            progress: None,
            result: None,
            shown: 1,
        }
    }
}

impl ComparePanel {
    pub fn on_done(&mut self, r: Result<Comparison, String>) {
        self.progress = None;
        self.result = Some(r);
    }

    /// The formats ticked.
    pub fn formats(&self) -> Result<Vec<ferrum_engine::quant::QuantFormat>, String> {
        QUANTS
            .iter()
            .zip(&self.chosen)
            .filter(|(q, c)| **c && q.1.is_some())
            .map(|(q, _)| q.1.unwrap_or_default().parse().map_err(|e: ferrum_engine::Error| e.to_string()))
            .collect()
    }

    /// Starts the comparison the controls describe (the Run compare button).
    pub fn run(&mut self, worker: &WorkerHandle) {
        match self.formats() {
            Ok(formats) => {
                self.progress = Some(0.0);
                self.result = None;
                let text = self.text.trim().into();
                worker.send(Command::Compare(CompareSpec { text, formats, ctx: self.ctx, windows: self.windows }));
            }
            Err(e) => self.result = Some(Err(e)),
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, worker: &WorkerHandle, picker: &dyn FilePicker, loaded: bool) {
        ui.heading("Compare formats on your text");
        ui.horizontal(|ui| {
            let label = ui.label("Text file");
            ui.add(egui::TextEdit::singleline(&mut self.text).desired_width(360.0)).labelled_by(label.id);
            if ui.button("Choose...").clicked()
                && let Some(p) = picker.pick(FileKind::Text)
            {
                self.text = p.display().to_string();
            }
            ui.add(egui::DragValue::new(&mut self.ctx).range(8..=4096).prefix("window "));
            ui.add(egui::DragValue::new(&mut self.windows).range(1..=64).prefix("windows "));
        });
        ui.horizontal_wrapped(|ui| {
            for (i, (name, q)) in QUANTS.iter().enumerate() {
                if q.is_some() {
                    ui.checkbox(&mut self.chosen[i], *name);
                }
            }
        });
        ui.horizontal(|ui| {
            let running = self.progress.is_some();
            if ui.add_enabled(loaded && !running, egui::Button::new("Run compare")).clicked() {
                self.run(worker);
            }
            if let Some(p) = self.progress {
                ui.add(egui::ProgressBar::new(p).desired_width(200.0).show_percentage());
                if ui.button("Cancel compare").clicked() {
                    worker.send(Command::CancelCompare);
                }
                ui.ctx().request_repaint();
            }
            if !loaded {
                ui.label("Load a model first: it is the reference.");
            }
        });
        match self.result.take() {
            Some(Err(e)) => {
                ui.colored_label(egui::Color32::from_rgb(220, 60, 60), format!("Error: {e}"));
                self.result = Some(Err(e));
            }
            Some(Ok(c)) => {
                self.results_ui(ui, &c);
                self.result = Some(Ok(c));
            }
            None => {}
        }
    }

    fn results_ui(&mut self, ui: &mut egui::Ui, c: &Comparison) {
        ui.horizontal(|ui| {
            ui.label("Accuracy axis:");
            ui.selectable_value(&mut self.axis, Accuracy::KlMean, "KL divergence");
            ui.selectable_value(&mut self.axis, Accuracy::Top1, "top-1 agreement");
            ui.selectable_value(&mut self.axis, Accuracy::Perplexity, "perplexity");
        });
        let axis = self.axis;
        let biggest = c.rows.iter().map(|r| r.weight_bytes).max().unwrap_or(1).max(1) as f64;
        Plot::new("accuracy vs speed")
            .height(220.0)
            .legend(Legend::default())
            .x_axis_label("decode tok/s")
            .y_axis_label(match axis {
                Accuracy::KlMean => "KL mean (nats)",
                Accuracy::Top1 => "top-1 agreement",
                Accuracy::Perplexity => "perplexity",
            })
            .show(ui, |p| {
                for row in &c.rows {
                    let y = match axis {
                        Accuracy::KlMean => row.report.kl_mean,
                        Accuracy::Top1 => row.report.top1_agreement,
                        Accuracy::Perplexity => row.report.perplexity,
                    };
                    let radius = 3.0 + 9.0 * (row.weight_bytes as f64 / biggest) as f32;
                    let point = PlotPoints::from(vec![[row.report.decode_tokens_per_sec, y]]);
                    p.points(Points::new(row.name.clone(), point).radius(radius));
                }
            });
        egui::Grid::new("compare table").striped(true).show(ui, |ui| {
            for h in ["variant", "weights", "perplexity", "KL mean", "KL p99", "top-1", "prefill/s", "decode/s"] {
                ui.strong(h);
            }
            ui.end_row();
            for row in &c.rows {
                let r = &row.report;
                ui.label(&row.name);
                ui.label(human_bytes(row.weight_bytes as f64));
                ui.label(format!("{:.3}", r.perplexity));
                ui.label(format!("{:.5}", r.kl_mean));
                ui.label(format!("{:.4}", r.kl_p99));
                ui.label(format!("{:.1}%", 100.0 * r.top1_agreement));
                ui.label(format!("{:.1}", r.prefill_tokens_per_sec));
                ui.label(format!("{:.1}", r.decode_tokens_per_sec));
                ui.end_row();
            }
        });
        if c.rows.len() < 2 {
            return;
        }
        self.shown = self.shown.clamp(1, c.rows.len() - 1);
        ui.horizontal(|ui| {
            ui.label("Colour the text by the KL of");
            for (i, row) in c.rows.iter().enumerate().skip(1) {
                ui.selectable_value(&mut self.shown, i, &row.name);
            }
        });
        let kl = &c.rows[self.shown].report.kl_per_token;
        let worst = kl.iter().copied().fold(0.0f64, f64::max).max(1e-9);
        let mut job = egui::text::LayoutJob::default();
        for (piece, &k) in c.pieces.iter().zip(kl) {
            // white for none, red for the worst token of the text
            let t = (k / worst).sqrt().clamp(0.0, 1.0) as f32;
            let background = egui::Color32::from_rgb(255, (255.0 * (1.0 - t)) as u8, (255.0 * (1.0 - t)) as u8);
            let format = egui::TextFormat { background, color: egui::Color32::BLACK, ..Default::default() };
            job.append(piece, 0.0, format);
        }
        egui::ScrollArea::vertical().max_height(240.0).show(ui, |ui| ui.label(job));
    }
}
