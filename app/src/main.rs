//! `ferrum-app`: the desktop app.
//!
//! ```sh
//! ferrum-app [--model PATH] [--backend auto|cpu|cpu-ref|wgpu|cuda]
//! ferrum-app --model PATH --smoke PROMPT --screenshot shot.png   # load, chat, screenshot, exit
//! ferrum-app --model PATH --smoke PROMPT --compare TEXT --screenshot shot.png   # ... then compare formats
//! ferrum-app --remote URL --smoke PROMPT --screenshot shot.png   # chat with a server, chart its metrics
//! ```
//! The smoke run is how CI checks a real window (under Xvfb): it prints the
//! answer on stdout and writes what the window showed as a PNG.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use eframe::egui;
use ferrum_app::{FerrumApp, Tab};
use ferrum_backends::BackendChoice;

struct Args {
    model: Option<String>,
    backend: BackendChoice,
    smoke: Option<String>,
    compare: Option<String>,
    remote: Option<String>,
    screenshot: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args =
        Args { model: None, backend: BackendChoice::Auto, smoke: None, compare: None, remote: None, screenshot: None };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--model" => args.model = Some(value()?),
            "--backend" => {
                let name = value()?;
                args.backend = BackendChoice::parse(&name).ok_or(format!("unknown backend {name:?}"))?;
            }
            "--smoke" => args.smoke = Some(value()?),
            "--compare" => args.compare = Some(value()?),
            "--remote" => args.remote = Some(value()?),
            "--screenshot" => args.screenshot = Some(value()?.into()),
            "--help" | "-h" => {
                return Err("usage: ferrum-app [--model PATH] [--backend B] \
                     [--smoke PROMPT [--compare TEXT | --remote URL] --screenshot FILE.png]"
                    .into());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// The smoke run's steps: load (or connect), ask, answer, screenshot, close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Smoke {
    Loading,
    Answering,
    Comparing,
    Connecting,
    RemoteAnswering,
    Shooting,
    Done,
}

struct App {
    app: FerrumApp,
    smoke: Option<(String, Smoke)>,
    compare: Option<String>,
    screenshot: Option<PathBuf>,
    shot: Arc<Mutex<Option<Result<(), String>>>>,
}

impl eframe::App for App {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::CentralPanel::default().show(ui, |ui| self.app.ui(ui));
        let Some((prompt, step)) = self.smoke.as_mut() else { return };
        let ctx = ui.ctx().clone();
        ctx.request_repaint_after(std::time::Duration::from_millis(50));
        match *step {
            Smoke::Loading if self.app.model.loaded.is_some() => {
                self.app.tab = Tab::Chat;
                self.app.chat.input = prompt.clone();
                self.app.chat.max_tokens = 16;
                self.app.chat.send(&self.app.worker);
                *step = Smoke::Answering;
            }
            Smoke::Loading if self.app.model.error.is_some() => {
                eprintln!("ferrum-app: {}", self.app.model.error.as_deref().unwrap_or_default());
                std::process::exit(1);
            }
            Smoke::Answering
                if !self.app.chat.generating && self.app.chat.turns.last().is_some_and(|t| t.stats.is_some()) =>
            {
                let answer = self.app.chat.turns.last().map(|t| t.text.clone()).unwrap_or_default();
                println!("{answer}");
                if let Some(text) = &self.compare {
                    self.app.tab = Tab::Compare;
                    self.app.compare.text = text.clone();
                    self.app.compare.ctx = 128;
                    self.app.compare.run(&self.app.worker);
                    *step = Smoke::Comparing;
                } else {
                    *step = Smoke::Shooting;
                    self.shoot(&ctx);
                }
            }
            Smoke::Comparing if self.app.compare.result.is_some() => {
                if let Some(Err(e)) = &self.app.compare.result {
                    eprintln!("ferrum-app: compare: {e}");
                    std::process::exit(1);
                }
                *step = Smoke::Shooting;
                self.shoot(&ctx);
            }
            Smoke::Connecting if !self.app.remote.models.is_empty() => {
                self.app.tab = Tab::Remote;
                self.app.remote.input = prompt.clone();
                self.app.remote.send();
                *step = Smoke::RemoteAnswering;
            }
            Smoke::Connecting | Smoke::RemoteAnswering if self.app.remote.status.is_some() => {
                eprintln!("ferrum-app: remote: {}", self.app.remote.status.as_deref().unwrap_or_default());
                std::process::exit(1);
            }
            // the answer, and two scrapes of /metrics after it to chart
            Smoke::RemoteAnswering
                if !self.app.remote.chatting
                    && self.app.remote.samples.iter().filter(|s| s.tokens_per_sec > 0.0).count() >= 1 =>
            {
                let answer = self.app.remote.chat.last().map(|(_, t)| t.clone()).unwrap_or_default();
                println!("{answer}");
                println!("metrics samples: {}", self.app.remote.samples.len());
                *step = Smoke::Shooting;
                self.shoot(&ctx);
            }
            Smoke::Shooting => {
                if let Some(saved) = self.shot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    if let Err(e) = saved {
                        eprintln!("ferrum-app: screenshot: {e}");
                        std::process::exit(1);
                    }
                    *step = Smoke::Done;
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            }
            _ => {}
        }
    }
}

impl App {
    /// Asks for a screenshot of the next frame; `Shooting` waits for it.
    fn shoot(&self, ctx: &egui::Context) {
        let (path, shot) = (self.screenshot.clone(), self.shot.clone());
        ctx.request_screenshot(move |image| {
            let saved = match &path {
                Some(p) => write_png(p, &image),
                None => Ok(()),
            };
            *shot.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
        });
    }
}

/// An RGBA image as a PNG file.
fn write_png(path: &PathBuf, image: &egui::ColorImage) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), image.size[0] as u32, image.size[1] as u32);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    let bytes: Vec<u8> = image.pixels.iter().flat_map(|p| p.to_array()).collect();
    writer.write_image_data(&bytes).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_inner_size([1100.0, 800.0]).with_title("Ferrum"),
        ..Default::default()
    };
    let result = eframe::run_native(
        "Ferrum",
        options,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            let mut app = FerrumApp::new(Arc::new(move || ctx.request_repaint()));
            app.model.backend = args.backend;
            if let Some(m) = &args.model {
                app.model.path = m.clone();
                if args.smoke.is_some() {
                    match app.model.spec() {
                        Ok(spec) => {
                            app.model.loading = Some(std::time::Instant::now());
                            app.worker.send(ferrum_app::worker::Command::Load(spec));
                        }
                        Err(e) => app.model.error = Some(e),
                    }
                }
            }
            if let Some(url) = &args.remote {
                app.remote.url = url.clone();
                app.remote.connect();
            }
            let first = if args.remote.is_some() { Smoke::Connecting } else { Smoke::Loading };
            let smoke = args.smoke.map(|p| (p, first));
            Ok(Box::new(App { app, smoke, compare: args.compare, screenshot: args.screenshot, shot: Arc::default() }))
        }),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrum-app: {e}");
            ExitCode::FAILURE
        }
    }
}
