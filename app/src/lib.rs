//! # ferrum-app
//!
//! The desktop app (egui/eframe): load a model, pick a backend and a
//! quantization, chat, and see throughput and accuracy side by side. Map:
//!
//! - [`worker`]: the thread that owns the model and the serving engine; the
//!   UI sends commands and drains events once per frame.
//! - [`panels`]: one file per panel: model, chat, dashboard, compare, remote.
//! - [`files`]: the native file dialog, behind a trait tests replace.
//! - [`remote`]: a `ferrum serve` (or any OpenAI-compatible server) watched
//!   and chatted with over HTTP.
//! - [`FerrumApp`]: the one state struct the panels share, and the frame
//!   that lays them out.
//!
//! The UI thread never runs a model: everything slow is a command.

pub mod files;
pub mod panels;
pub mod remote;
pub mod worker;

use std::sync::Arc;

use eframe::egui;

use files::{FilePicker, NativeDialog};
use panels::{chat::ChatPanel, compare::ComparePanel, dashboard::Dashboard, model::ModelPanel, remote::RemotePanel};
use worker::{Command, Event, Repaint, WorkerHandle};

/// The panels, one tab each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Model,
    Chat,
    Dashboard,
    Compare,
    Remote,
}

impl Tab {
    const ALL: [(Tab, &'static str); 5] = [
        (Tab::Model, "Model"),
        (Tab::Chat, "Chat"),
        (Tab::Dashboard, "Dashboard"),
        (Tab::Compare, "Compare"),
        (Tab::Remote, "Remote"),
    ];
}

/// Everything the window shows.
pub struct FerrumApp {
    pub tab: Tab,
    pub worker: WorkerHandle,
    pub model: ModelPanel,
    pub chat: ChatPanel,
    pub dashboard: Dashboard,
    pub compare: ComparePanel,
    pub remote: RemotePanel,
    /// where "Open..." asks (tests put their own answer here)
    pub picker: Box<dyn FilePicker>,
}

impl FerrumApp {
    /// The app with its worker; `repaint` wakes the window when the worker
    /// has news (a no-op in tests, which poll).
    pub fn new(repaint: Repaint) -> Self {
        let worker = worker::start(repaint.clone());
        worker.send(Command::Devices);
        FerrumApp {
            tab: Tab::Model,
            worker,
            model: ModelPanel::default(),
            chat: ChatPanel::default(),
            dashboard: Dashboard::default(),
            compare: ComparePanel::default(),
            remote: RemotePanel::new(repaint),
            picker: Box::new(NativeDialog),
        }
    }

    /// The app with nothing to wake (tests drive frames themselves).
    pub fn headless() -> Self {
        Self::new(Arc::new(|| {}))
    }

    /// Hands each worker event to the panel it concerns.
    pub fn drain(&mut self) {
        while let Ok(e) = self.worker.events.try_recv() {
            match e {
                Event::Devices(d) => self.model.devices = d,
                Event::Pulled(p) => self.model.on_pulled(p),
                Event::LoadProgress(f) => self.model.load_progress = self.model.loading.map(|_| f),
                Event::Estimate(e) => self.model.on_estimate(e),
                Event::Loaded(l) => {
                    if let Ok(loaded) = &l {
                        self.dashboard.on_loaded(loaded);
                    }
                    self.model.on_loaded(l);
                }
                Event::Token(t) => self.chat.on_token(&t),
                Event::ChatDone(stats) => {
                    self.dashboard.on_answer(&stats);
                    self.chat.on_done(stats);
                }
                Event::ChatError(e) => self.chat.on_error(e),
                Event::BenchDone(r) => self.dashboard.on_bench(r),
                Event::CompareProgress(f) => self.compare.progress = Some(f),
                Event::CompareDone(r) => self.compare.on_done(r),
                Event::Sample(s) => self.dashboard.on_sample(s),
            }
        }
        self.remote.drain();
    }

    /// One frame: the tabs, then the current panel.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.drain();
        ui.horizontal(|ui| {
            ui.heading("Ferrum");
            ui.separator();
            for (tab, name) in Tab::ALL {
                ui.selectable_value(&mut self.tab, tab, name);
            }
            ui.separator();
            ui.label(self.model.status());
        });
        ui.separator();
        let (worker, picker) = (&self.worker, self.picker.as_ref());
        egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| match self.tab {
            Tab::Model => self.model.ui(ui, worker, picker),
            Tab::Chat => self.chat.ui(ui, worker, self.model.loaded.as_ref()),
            Tab::Dashboard => self.dashboard.ui(ui, worker, self.model.loaded.is_some()),
            Tab::Compare => self.compare.ui(ui, worker, picker, self.model.loaded.is_some()),
            Tab::Remote => self.remote.ui(ui),
        });
    }
}

impl eframe::App for FerrumApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::CentralPanel::default().show(ui, |ui| FerrumApp::ui(self, ui));
    }
}

/// Formats bytes as the panels show them.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{v:.0} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// Formats a parameter count (1.2B, 135.0M).
pub fn human_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}
