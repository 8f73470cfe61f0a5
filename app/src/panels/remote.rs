//! The remote panel: a `ferrum serve` (or any OpenAI-compatible server) by
//! URL and API key, its `/metrics` charted live (tokens/s, time to first
//! token, queue depth, KV blocks, running sequences), and a chat against it.

use std::collections::VecDeque;

use eframe::egui;
use egui_plot::{Legend, Line, Plot, PlotPoints};

use crate::remote::{Remote, RemoteCommand, RemoteEvent, RemoteSample, start};
use crate::worker::Repaint;

pub struct RemotePanel {
    pub url: String,
    pub key: String,
    pub models: Vec<String>,
    pub samples: VecDeque<RemoteSample>,
    pub status: Option<String>,
    pub input: String,
    /// (role, text)
    pub chat: Vec<(String, String)>,
    pub chatting: bool,
    remote: Remote,
}

impl RemotePanel {
    pub fn new(repaint: Repaint) -> Self {
        RemotePanel {
            url: "http://127.0.0.1:8000".into(),
            key: String::new(),
            models: Vec::new(),
            samples: VecDeque::new(),
            status: None,
            input: String::new(),
            chat: Vec::new(),
            chatting: false,
            remote: start(repaint),
        }
    }

    pub fn drain(&mut self) {
        while let Ok(e) = self.remote.events.try_recv() {
            match e {
                RemoteEvent::Sample(s) => {
                    self.status = None;
                    self.samples.push_back(s);
                    while self.samples.len() > 600 {
                        self.samples.pop_front();
                    }
                }
                RemoteEvent::Unreachable(e) => self.status = Some(e),
                RemoteEvent::Models(m) => {
                    self.status = None;
                    self.models = m;
                }
                RemoteEvent::Token(t) => {
                    if let Some((_, text)) = self.chat.last_mut() {
                        text.push_str(&t);
                    }
                }
                RemoteEvent::ChatDone => self.chatting = false,
                RemoteEvent::ChatError(e) => {
                    self.chatting = false;
                    self.status = Some(e);
                }
            }
        }
    }

    /// Starts watching the server the URL names (the Connect button).
    pub fn connect(&mut self) {
        self.samples.clear();
        self.models.clear();
        let _ = self.remote.commands.send(RemoteCommand::Watch { url: self.url.clone(), key: self.key.clone() });
    }

    /// Sends the typed message with the conversation so far (Send to server).
    pub fn send(&mut self) {
        if self.input.trim().is_empty() {
            return;
        }
        self.chat.push(("user".into(), std::mem::take(&mut self.input)));
        let messages = self.chat.clone();
        self.chat.push(("assistant".into(), String::new()));
        self.chatting = true;
        let model = self.models.first().cloned().unwrap_or_default();
        let _ = self.remote.commands.send(RemoteCommand::Chat {
            url: self.url.clone(),
            key: self.key.clone(),
            model,
            messages,
        });
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Remote server");
        ui.horizontal(|ui| {
            let label = ui.label("Server URL");
            ui.add(egui::TextEdit::singleline(&mut self.url).desired_width(260.0)).labelled_by(label.id);
            let label = ui.label("API key");
            ui.add(egui::TextEdit::singleline(&mut self.key).password(true).desired_width(160.0)).labelled_by(label.id);
            if ui.button("Connect").clicked() {
                self.connect();
            }
            if ui.button("Disconnect").clicked() {
                let _ = self.remote.commands.send(RemoteCommand::Unwatch);
            }
        });
        if !self.models.is_empty() {
            ui.label(format!("Serving: {}", self.models.join(", ")));
        }
        if let Some(s) = &self.status {
            ui.colored_label(egui::Color32::from_rgb(220, 60, 60), format!("Error: {s}"));
        }
        let series =
            |f: fn(&RemoteSample) -> f64| -> Vec<[f64; 2]> { self.samples.iter().map(|s| [s.at, f(s)]).collect() };
        Plot::new("remote rates").height(140.0).legend(Legend::default()).show(ui, |p| {
            p.line(Line::new("tokens/s", PlotPoints::from(series(|s| s.tokens_per_sec))));
            p.line(Line::new("TTFT ms", PlotPoints::from(series(|s| s.ttft * 1000.0))));
        });
        Plot::new("remote load").height(120.0).legend(Legend::default()).show(ui, |p| {
            p.line(Line::new("queue", PlotPoints::from(series(|s| s.queue))));
            p.line(Line::new("KV blocks", PlotPoints::from(series(|s| s.kv_blocks))));
            p.line(Line::new("running", PlotPoints::from(series(|s| s.running))));
        });
        ui.separator();
        for (role, text) in &self.chat {
            ui.label(format!("{}: {text}", if role == "user" { "You" } else { "Server" }));
        }
        ui.horizontal(|ui| {
            let label = ui.label("Remote message");
            ui.add(egui::TextEdit::singleline(&mut self.input).desired_width(380.0)).labelled_by(label.id);
            if ui.add_enabled(!self.chatting, egui::Button::new("Send to server")).clicked() {
                self.send();
            }
            if self.chatting {
                ui.add(egui::Spinner::new());
            }
        });
    }
}
