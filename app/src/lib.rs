//! # ferrum-app
//!
//! The desktop app (egui/eframe): load a model, pick a backend and a
//! quantization, chat, and watch throughput and accuracy side by side. It
//! talks only to `ferrum_engine`'s public API. Only this map exists yet.
