//! `ferrum`: run open-weight LLMs on CUDA, WebGPU or the CPU.
//!
//! Each subcommand lives in `commands/`; the `ferrum-backends` crate is the only place that
//! names backend crates; `model_args.rs` holds the flags shared by commands
//! that load a model.

mod bench;
mod commands;
mod model_args;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "ferrum", version, about = "Run open-weight LLMs on CUDA, WebGPU or the CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Complete a prompt, streaming the text.
    Generate(commands::generate::GenerateArgs),
    /// Chat through the model's chat template (one message, or interactive).
    Chat(commands::chat::ChatArgs),
    /// Write the logits of every position of a token sequence to a safetensors file.
    Logits(commands::logits::LogitsArgs),
    /// Perplexity of a model on a text file (llama-perplexity style windows).
    Eval(commands::eval::EvalArgs),
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Measure throughput and latency (in-process, or against an OpenAI-compatible --url).
    Bench(bench::BenchArgs),
    /// Write a quantized copy of a model folder in ModelOpt's checkpoint layout.
    Quantize(commands::quantize::QuantizeArgs),
    /// Describe a model: architecture, parameters, dtypes, memory needed.
    Info(commands::info::InfoArgs),
    /// List the backends on this machine, and why any is unavailable.
    Devices,
    /// Fetch a known model into the cache (default: smollm2-135m-instruct) and print its path.
    Pull {
        #[arg(default_value = ferrum_hub::DEFAULT_MODEL)]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Generate(a) => commands::generate::run(a),
        Command::Chat(a) => commands::chat::run(a),
        Command::Logits(a) => commands::logits::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Info(a) => commands::info::run(a),
        Command::Quantize(a) => commands::quantize::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Devices => commands::devices::run(),
        Command::Pull { name } => ferrum_hub::resolve(name).map(|path| println!("{}", path.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
