//! The chat panel: a conversation through the model's chat template, the
//! answer streamed token by token, a stop button, the system prompt and
//! sampling settings, and under each answer its time to first token and its
//! prefill and decode speed.

use eframe::egui;
use ferrum_engine::sampler::SamplingParams;

use crate::worker::{ChatRequest, ChatStats, Command, Loaded, WorkerHandle};

/// One message of the conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub role: &'static str,
    pub text: String,
    pub stats: Option<ChatStats>,
}

pub struct ChatPanel {
    pub system: String,
    pub input: String,
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: usize,
    pub seed: u64,
    pub turns: Vec<Turn>,
    /// an answer is streaming into the last turn
    pub generating: bool,
    pub error: Option<String>,
}

impl Default for ChatPanel {
    fn default() -> Self {
        ChatPanel {
            system: String::new(),
            input: String::new(),
            temperature: 0.0,
            top_p: 1.0,
            max_tokens: 256,
            seed: 0,
            turns: Vec::new(),
            generating: false,
            error: None,
        }
    }
}

impl ChatPanel {
    pub fn on_token(&mut self, text: &str) {
        if let Some(t) = self.turns.last_mut().filter(|t| t.role == "assistant") {
            t.text.push_str(text);
        }
    }

    pub fn on_done(&mut self, stats: ChatStats) {
        self.generating = false;
        if let Some(t) = self.turns.last_mut().filter(|t| t.role == "assistant") {
            t.stats = Some(stats);
        }
    }

    pub fn on_error(&mut self, e: String) {
        self.generating = false;
        // an answer that never started leaves no empty turn behind
        if self.turns.last().is_some_and(|t| t.role == "assistant" && t.text.is_empty()) {
            self.turns.pop();
        }
        self.error = Some(e);
    }

    /// Sends the typed message with the conversation so far (the Send button).
    pub fn send(&mut self, worker: &WorkerHandle) {
        let text = self.input.trim().to_string();
        if text.is_empty() {
            return;
        }
        self.input.clear();
        self.error = None;
        self.turns.push(Turn { role: "user", text, stats: None });
        let history = self.turns.iter().map(|t| (t.role.to_string(), t.text.clone())).collect();
        self.turns.push(Turn { role: "assistant", text: String::new(), stats: None });
        self.generating = true;
        let sampling =
            SamplingParams { temperature: self.temperature, top_p: self.top_p, seed: self.seed, ..Default::default() };
        worker.send(Command::Chat(ChatRequest {
            system: self.system.clone(),
            history,
            sampling,
            max_tokens: self.max_tokens,
        }));
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, worker: &WorkerHandle, loaded: Option<&Loaded>) {
        ui.heading("Chat");
        if loaded.is_none() {
            ui.label("Load a model in the Model tab first.");
        }
        ui.horizontal(|ui| {
            let label = ui.label("System prompt");
            ui.add(egui::TextEdit::singleline(&mut self.system).desired_width(400.0)).labelled_by(label.id);
        });
        ui.horizontal(|ui| {
            ui.add(egui::Slider::new(&mut self.temperature, 0.0..=2.0).text("temperature"));
            ui.add(egui::Slider::new(&mut self.top_p, 0.05..=1.0).text("top-p"));
            ui.add(egui::Slider::new(&mut self.max_tokens, 1..=4096).logarithmic(true).text("max tokens"));
            ui.add(egui::DragValue::new(&mut self.seed).prefix("seed "));
        });
        ui.separator();
        // one scope for the conversation: the message field after it keeps
        // its id, and so its focus, as turns and errors come and go
        ui.scope(|ui| self.turns_ui(ui));
        ui.horizontal(|ui| {
            let label = ui.label("Message");
            let edit = ui.add(egui::TextEdit::singleline(&mut self.input).desired_width(420.0)).labelled_by(label.id);
            let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            let can_send = loaded.is_some() && !self.generating;
            let clicked = ui.add_enabled(can_send, egui::Button::new("Send")).clicked();
            if can_send && (clicked || enter) {
                self.send(worker);
            }
            if self.generating {
                if ui.button("Stop").clicked() {
                    worker.send(Command::Stop);
                }
                ui.add(egui::Spinner::new());
                ui.ctx().request_repaint();
            }
            if ui.add_enabled(!self.generating, egui::Button::new("Clear")).clicked() {
                self.turns.clear();
            }
        });
    }

    fn turns_ui(&self, ui: &mut egui::Ui) {
        for t in &self.turns {
            ui.group(|ui| {
                ui.set_width(ui.available_width());
                ui.strong(if t.role == "user" { "You" } else { "Model" });
                ui.label(&t.text);
                if let Some(s) = &t.stats {
                    ui.small(format!(
                        "TTFT {:.0} ms | prefill {:.0} tok/s | decode {:.1} tok/s | {} tokens{}",
                        1000.0 * s.ttft,
                        s.prefill_tokens_per_sec,
                        s.decode_tokens_per_sec,
                        s.completion_tokens,
                        if s.stopped { " | stopped" } else { "" }
                    ));
                }
            });
        }
        if let Some(e) = &self.error {
            ui.colored_label(egui::Color32::from_rgb(220, 60, 60), format!("Error: {e}"));
        }
    }
}
