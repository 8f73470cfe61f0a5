//! `ferrum serve`: an OpenAI-compatible HTTP server (axum on tokio) over the
//! serving engine. The engine runs on its own thread; handlers only submit
//! requests and relay events.

mod handlers;
mod listen;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::{get, post};
use clap::Args;
use ferrum_api::{RequestLimits, Served};
use ferrum_engine::kv_cache::KvCache;
use ferrum_engine::memory::Workload;
use ferrum_engine::sampler::SamplingParams;
use ferrum_engine::serving::{EngineConfig, spawn};

use crate::model_args::ModelArgs;
use handlers::AppState;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/ endpoints.
    #[arg(long)]
    pub api_key: Option<String>,
    /// The model id clients use (default: the model's file or folder name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Memory for the KV cache, in MiB.
    #[arg(long, default_value_t = 512)]
    pub kv_cache_mib: usize,
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Most tokens in one forward pass (decode tokens + prompt chunks).
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Most sequences decoding at once.
    #[arg(long, default_value_t = 64)]
    pub max_running: usize,
    /// Most requests waiting; beyond it the server answers 503.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Seconds a client has to send its request headers; a slower one is
    /// disconnected, so half-sent requests hold no connection.
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout_secs: f64,
    /// Seconds a client has to send its whole request body (408 otherwise).
    #[arg(long, default_value_t = 30.0)]
    pub body_timeout_secs: f64,
    /// Seconds a write to a client may stay blocked (a client that stopped
    /// reading its stream) before the connection is cut and its sequences freed.
    #[arg(long, default_value_t = 30.0)]
    pub write_timeout_secs: f64,
    /// Most open connections; beyond it a connection gets a 503 and is closed.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// On SIGTERM or Ctrl-C: seconds running requests get to finish before
    /// they are ended with an error.
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_timeout_secs: f64,
    #[command(flatten)]
    pub limits: RequestLimits,
    #[command(flatten)]
    pub speculation: crate::model_args::SpeculationArgs,
}

/// A flag's seconds as a duration: positive and finite.
fn seconds(flag: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|t| !t.is_zero())
        .with_context(|| format!("--{flag} must be a positive number of seconds, got {value}"))
}

pub fn run(args: &ServeArgs) -> Result<()> {
    let listen_limits = listen::Limits {
        header_timeout: seconds("header-timeout-secs", args.header_timeout_secs)?,
        write_timeout: seconds("write-timeout-secs", args.write_timeout_secs)?,
        max_connections: args.max_connections.max(1),
        shutdown_timeout: seconds("shutdown-timeout-secs", args.shutdown_timeout_secs)?,
    };
    let body_timeout = seconds("body-timeout-secs", args.body_timeout_secs)?;
    let loaded = args.model.load_for(|_| Workload {
        kv_cache_bytes: args.kv_cache_mib << 20,
        step_tokens: args.max_batch_tokens,
        logit_rows: args.max_running.min(args.max_batch_tokens),
    })?;
    let config = &loaded.model.config;
    let kv_dtype = config.kv_cache_dtype;
    let block_bytes = KvCache::bytes_per_block(config, args.block_size);
    let num_blocks = (args.kv_cache_mib << 20) / block_bytes.max(1);
    let engine_config = EngineConfig {
        num_blocks: num_blocks.max(1),
        block_size: args.block_size,
        max_batch_tokens: args.max_batch_tokens,
        max_running: args.max_running,
        max_queue: args.max_queue,
        speculation: args.speculation.speculation()?,
        draft: args.speculation.drafter(&args.model, &loaded.model)?,
    };
    let source = loaded.source;
    let model_name = match &args.served_model_name {
        Some(n) => n.clone(),
        None => source.path.file_stem().map_or("model".into(), |s| s.to_string_lossy().into_owned()),
    };
    let mut defaults: SamplingParams = source.generation.sampling();
    if source.generation.do_sample.is_none() {
        defaults.temperature = 1.0; // OpenAI's default when the model suggests nothing
    }
    let template = source.chat_template().ok();
    let eos_token_ids = source.eos_token_ids();
    let tokenizer = source.tokenizer.map(Arc::new);
    let engine = spawn(loaded.model, tokenizer.clone(), engine_config.clone())?;
    let (ending_tx, ending_rx) = tokio::sync::watch::channel(false);
    let metrics = engine.metrics.clone();
    let state = Arc::new(AppState {
        served: Served {
            model_name: model_name.clone(),
            tokenizer,
            template,
            defaults,
            eos_token_ids,
            max_context: engine.max_context,
            limits: args.limits.clone(),
        },
        engine,
        api_key: args.api_key.clone(),
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        max_body_bytes: args.max_body_bytes,
        body_timeout,
        ending: ending_rx,
    });
    let app = Router::new()
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/v1/models", get(handlers::models))
        .route("/v1/models/{id}", get(handlers::model))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .with_state(state);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
        let tokens = engine_config.num_blocks * engine_config.block_size;
        eprintln!(
            "serving {model_name:?} on http://{} (KV cache: {} blocks of {} tokens in {kv_dtype}, {tokens} tokens, \
             {:.1} MiB)",
            listener.local_addr()?,
            engine_config.num_blocks,
            engine_config.block_size,
            (engine_config.num_blocks * block_bytes) as f64 / (1 << 20) as f64
        );
        listen::serve(listener, app, listen_limits, metrics, ending_tx, shutdown_signal()).await.context("server error")
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    eprintln!("shutting down");
}
