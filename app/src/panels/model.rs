//! The model panel: open a Hugging Face folder or a GGUF file, choose the
//! backend, the quantization and the KV cache, see the memory each choice
//! needs before loading, load (with cancel), then the card of what loaded
//! and the memory it measured beside the estimate.

use std::path::PathBuf;
use std::time::Instant;

use eframe::egui;
use ferrum_backends::BackendChoice;
use ferrum_engine::DType;
use ferrum_engine::quant::QuantFormat;

use crate::files::{FileKind, FilePicker};
use crate::worker::{Command, Estimate, LoadSpec, Loaded, WorkerHandle};
use crate::{human_bytes, human_count};

/// The quantization choices the panel offers.
pub const QUANTS: [(&str, Option<&str>); 10] = [
    ("none", None),
    ("FP8 (per tensor)", Some("fp8")),
    ("FP8 (per channel)", Some("fp8:channel")),
    ("FP8 (128x128 blocks)", Some("fp8:block")),
    ("INT8", Some("int8")),
    ("INT4 (groups of 128)", Some("int4")),
    ("INT4 (groups of 32, asymmetric)", Some("int4:g32:asym")),
    ("NVFP4", Some("nvfp4")),
    ("MXFP4", Some("mxfp4")),
    ("INT4 (groups of 64)", Some("int4:g64")),
];

pub struct ModelPanel {
    pub path: String,
    pub backend: BackendChoice,
    /// index into [`QUANTS`]
    pub quant: usize,
    pub exclude: String,
    pub kv: DType,
    pub kv_cache_mib: usize,
    pub devices: Vec<(String, Result<String, String>)>,
    pub estimate: Option<Result<Estimate, String>>,
    /// the spec the estimate was asked for (asked again when it changes)
    asked: Option<LoadSpec>,
    pub loading: Option<Instant>,
    /// the share of layers loaded, while loading
    pub load_progress: Option<f32>,
    /// since when the default model is being pulled
    pub pulling: Option<Instant>,
    pub loaded: Option<Loaded>,
    pub error: Option<String>,
    pub recent: Vec<PathBuf>,
}

impl Default for ModelPanel {
    fn default() -> Self {
        ModelPanel {
            path: String::new(),
            backend: BackendChoice::Auto,
            quant: 0,
            exclude: String::new(),
            kv: DType::F16,
            kv_cache_mib: 256,
            devices: Vec::new(),
            estimate: None,
            asked: None,
            loading: None,
            load_progress: None,
            pulling: None,
            loaded: None,
            error: None,
            recent: Vec::new(),
        }
    }
}

impl ModelPanel {
    /// The load the controls describe, or why they describe none.
    pub fn spec(&self) -> Result<LoadSpec, String> {
        let quant = match QUANTS[self.quant].1 {
            Some(q) => Some(q.parse::<QuantFormat>().map_err(|e| e.to_string())?),
            None => None,
        };
        let exclude = self.exclude.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect();
        Ok(LoadSpec {
            path: PathBuf::from(self.path.trim()),
            backend: self.backend,
            quant,
            exclude,
            kv: self.kv,
            kv_cache_mib: self.kv_cache_mib,
        })
    }

    /// The line the tab bar shows.
    pub fn status(&self) -> String {
        match (&self.loading, &self.loaded) {
            (Some(t), _) => format!("loading... {:.1} s", t.elapsed().as_secs_f64()),
            (None, Some(l)) => format!("{} on {}", l.card.architecture, l.backend),
            (None, None) => "no model loaded".into(),
        }
    }

    pub fn on_estimate(&mut self, e: Result<Estimate, String>) {
        self.estimate = Some(e);
    }

    pub fn on_pulled(&mut self, p: Result<PathBuf, String>) {
        self.pulling = None;
        match p {
            Ok(path) => self.path = path.display().to_string(),
            Err(e) => self.error = Some(e),
        }
    }

    pub fn on_loaded(&mut self, l: Result<Loaded, String>) {
        self.loading = None;
        self.load_progress = None;
        match l {
            Ok(l) => {
                self.error = None;
                if !self.recent.contains(&l.card.path) {
                    self.recent.insert(0, l.card.path.clone());
                    self.recent.truncate(8);
                }
                self.loaded = Some(l);
            }
            Err(e) => self.error = Some(e),
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, worker: &WorkerHandle, picker: &dyn FilePicker) {
        ui.heading("Model");
        ui.horizontal(|ui| {
            let label = ui.label("Model path");
            ui.add(
                egui::TextEdit::singleline(&mut self.path).desired_width(420.0).hint_text("a folder or a .gguf file"),
            )
            .labelled_by(label.id);
            for (button, kind) in [("Open file...", FileKind::ModelFile), ("Open folder...", FileKind::ModelFolder)] {
                if ui.button(button).clicked()
                    && let Some(p) = picker.pick(kind)
                {
                    self.path = p.display().to_string();
                }
            }
        });
        ui.horizontal(|ui| {
            let pulling = self.pulling.is_some();
            let button = format!("Pull the default model ({})", ferrum_hub::DEFAULT_MODEL);
            if ui.add_enabled(!pulling, egui::Button::new(button)).clicked() {
                self.error = None;
                self.pulling = Some(Instant::now());
                worker.send(Command::PullDefault);
            }
            if let Some(t) = self.pulling {
                ui.add(egui::Spinner::new());
                ui.label(format!("pulling... {:.0} s (progress on the terminal)", t.elapsed().as_secs_f64()));
                ui.ctx().request_repaint_after(std::time::Duration::from_millis(250));
            }
        });
        if !self.recent.is_empty() {
            ui.horizontal_wrapped(|ui| {
                ui.label("Recent:");
                for p in self.recent.clone() {
                    if ui.link(p.display().to_string()).clicked() {
                        self.path = p.display().to_string();
                    }
                }
            });
        }
        ui.horizontal(|ui| {
            egui::ComboBox::from_label("Backend").selected_text(self.backend.name()).show_ui(ui, |ui| {
                for &b in BackendChoice::all() {
                    ui.selectable_value(&mut self.backend, b, b.name());
                }
            });
            egui::ComboBox::from_label("Quantization").selected_text(QUANTS[self.quant].0).show_ui(ui, |ui| {
                for (i, (name, _)) in QUANTS.iter().enumerate() {
                    ui.selectable_value(&mut self.quant, i, *name);
                }
            });
            egui::ComboBox::from_label("KV cache").selected_text(self.kv.name()).show_ui(ui, |ui| {
                for d in DType::CACHE {
                    ui.selectable_value(&mut self.kv, d, d.name());
                }
            });
        });
        ui.horizontal(|ui| {
            let label = ui.label("Leave as stored (patterns)");
            ui.add(
                egui::TextEdit::singleline(&mut self.exclude).desired_width(200.0).hint_text("layers.0.*, mlp.gate"),
            )
            .labelled_by(label.id);
            ui.add(egui::Slider::new(&mut self.kv_cache_mib, 16..=8192).logarithmic(true).text("KV cache MiB"));
        });
        // the estimate follows the controls, asked once per change
        match self.spec() {
            Ok(spec) if !spec.path.as_os_str().is_empty() && self.asked.as_ref() != Some(&spec) => {
                self.asked = Some(spec.clone());
                self.estimate = None;
                worker.send(Command::Estimate(spec));
            }
            Err(e) => self.estimate = Some(Err(e)),
            _ => {}
        }
        // in a scope of its own: the widgets after it keep their ids (and
        // their clicks) when the estimate arrives and changes its lines
        ui.scope(|ui| self.estimate_ui(ui));
        ui.horizontal(|ui| {
            let busy = self.loading.is_some();
            if ui.add_enabled(!busy, egui::Button::new("Load")).clicked() {
                match self.spec() {
                    Ok(spec) => {
                        self.error = None;
                        self.loading = Some(Instant::now());
                        worker.send(Command::Load(spec));
                    }
                    Err(e) => self.error = Some(e),
                }
            }
            if busy {
                match self.load_progress {
                    Some(p) => ui.add(egui::ProgressBar::new(p).desired_width(200.0).show_percentage()),
                    None => ui.add(egui::Spinner::new()),
                };
                if ui.button("Cancel").clicked() {
                    worker.send(Command::CancelLoad);
                    self.loading = None;
                    self.load_progress = None;
                }
                ui.ctx().request_repaint();
            }
        });
        if let Some(e) = &self.error {
            ui.colored_label(egui::Color32::from_rgb(220, 60, 60), format!("Error: {e}"));
        }
        if let Some(l) = &self.loaded {
            loaded_ui(ui, l);
        }
        ui.separator();
        ui.heading("Devices");
        egui::Grid::new("devices").striped(true).show(ui, |ui| {
            for (name, d) in &self.devices {
                ui.label(name);
                match d {
                    Ok(desc) => ui.label(desc),
                    Err(why) => ui.colored_label(egui::Color32::GRAY, format!("unavailable: {why}")),
                };
                ui.end_row();
            }
        });
    }

    fn estimate_ui(&self, ui: &mut egui::Ui) {
        match &self.estimate {
            None if !self.path.trim().is_empty() => {
                ui.label("estimating...");
            }
            None => {}
            Some(Err(e)) => {
                ui.colored_label(egui::Color32::from_rgb(220, 60, 60), format!("Error: {e}"));
            }
            Some(Ok(e)) => {
                let c = &e.card;
                ui.label(format!(
                    "{} | {} parameters ({} active) | context {} | {}",
                    c.architecture,
                    human_count(c.parameters),
                    human_count(c.active_parameters),
                    c.context,
                    c.dtypes.iter().map(|(d, n)| format!("{d}: {}", human_count(*n))).collect::<Vec<_>>().join(", ")
                ));
                let fits = e.available.is_none_or(|a| e.need.total() as u64 <= a);
                let text = format!(
                    "Needs {}: weights {} + KV cache {} + activations {}{}",
                    human_bytes(e.need.total() as f64),
                    human_bytes(e.need.weights as f64),
                    human_bytes(e.need.kv_cache as f64),
                    human_bytes(e.need.activations as f64),
                    e.available.map_or(String::new(), |a| format!(" | {} free on {}", human_bytes(a as f64), e.device)),
                );
                if fits {
                    ui.label(text);
                } else {
                    ui.colored_label(egui::Color32::from_rgb(220, 140, 40), format!("{text} | does not fit"));
                }
            }
        }
    }
}

fn loaded_ui(ui: &mut egui::Ui, l: &Loaded) {
    ui.separator();
    ui.label(format!(
        "Loaded {} on {} in {:.2} s{}, KV cache {}",
        l.card.path.display(),
        l.backend,
        l.seconds,
        l.quant.map_or(String::new(), |q| format!(", {q}")),
        l.kv
    ));
    egui::Grid::new("memory").striped(true).show(ui, |ui| {
        ui.label("");
        ui.label("estimated");
        ui.label("measured");
        ui.end_row();
        ui.label("weights");
        ui.label(human_bytes(l.estimate.weights as f64));
        ui.label(human_bytes(l.weight_bytes as f64));
        ui.end_row();
        ui.label("KV cache");
        ui.label(human_bytes(l.estimate.kv_cache as f64));
        ui.label(human_bytes(l.kv_cache_bytes as f64));
        ui.end_row();
    });
}
