//! `ferrum info`: what a model holds and what running it costs, read from
//! headers and metadata alone (no weights are loaded).

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use ferrum_engine::config::RopeScaling;
use ferrum_engine::memory::{MemoryNeed, Workload};
use ferrum_engine::source::ModelSource;

use crate::model_args::ModelArgs;
use ferrum_backends as backends;

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: &InfoArgs) -> Result<()> {
    let path = args.model.path()?;
    let source = ModelSource::open(&path)?;
    // the config as it would run on the backend chosen (--kv-cache-dtype)
    let backend = backends::open(args.model.backend, args.model.threads)?;
    let config = args.model.config_on(&source, backend.as_ref())?;
    let c = &config;
    let stored = source.weights.stored();
    let params: usize = stored.iter().map(|t| t.elements).sum();
    let bytes: usize = stored.iter().map(|t| t.bytes).sum();
    let mut by_dtype: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &stored {
        *by_dtype.entry(t.dtype).or_default() += t.elements;
    }
    let kv_per_token = c.kv_bytes_per_token();
    let windows: Vec<String> = c.layer_windows.iter().map(|w| w.map_or("full".into(), |w| w.to_string())).collect();
    let attention = if windows.iter().all(|w| *w == windows[0]) {
        format!("{} on all {} layers", windows[0], c.num_layers).replace("full on", "full attention on")
    } else {
        format!("per layer (window or full): {}", windows.join(" "))
    };
    let rope = match &c.rope.scaling {
        RopeScaling::None => format!("theta {}", c.rope.theta),
        RopeScaling::Linear { factor } => format!("theta {}, linear x{factor}", c.rope.theta),
        RopeScaling::Llama3 { factor, .. } => format!("theta {}, llama3 x{factor}", c.rope.theta),
        RopeScaling::Yarn { factor, original_max_position_embeddings, .. } => {
            format!("theta {}, yarn x{factor} of {original_max_position_embeddings}", c.rope.theta)
        }
    };
    println!("model          {} ({:?})", path.display(), source.format);
    println!("architecture   {}", c.architecture.hf_name());
    println!("layers         {}", c.num_layers);
    println!("hidden         {} (intermediate {})", c.hidden_size, c.intermediate_size);
    println!("heads          {} query, {} key/value, head_dim {}", c.num_heads, c.num_kv_heads, c.head_dim);
    println!("vocab          {}", c.vocab_size);
    println!("context        {}", c.max_position_embeddings);
    println!("rope           {rope}");
    println!("attention      {attention}");
    println!("switches       qkv_bias={} qk_norm={} tied_embeddings={}", c.qkv_bias, c.qk_norm, c.tie_word_embeddings);
    println!("parameters     {} ({})", params, human_count(params));
    if let Some(m) = &c.moe {
        let counts = c.parameter_counts();
        let layers: Vec<String> = (0..c.num_layers).filter(|&l| m.is_moe_layer(l)).map(|l| l.to_string()).collect();
        println!(
            "experts        {} of intermediate {}, top {} ({:?}{}), on layers {}",
            m.experts,
            m.expert_intermediate,
            m.route.top_k,
            m.route.scoring,
            if m.route.renormalize { ", renormalized" } else { "" },
            layers.join(" ")
        );
        println!(
            "active         {} per token of {} ({:.0}%)",
            human_count(counts.active),
            human_count(counts.total),
            100.0 * counts.active as f64 / counts.total.max(1) as f64
        );
    }
    let dtypes: Vec<String> = by_dtype.iter().map(|(d, n)| format!("{d}: {}", human_count(*n))).collect();
    println!("stored as      {}", dtypes.join(", "));
    println!("weights        {} on disk", human_bytes(bytes));
    println!(
        "kv cache       {} per token ({}), {} at full context",
        human_bytes(kv_per_token),
        c.kv_cache_dtype,
        human_bytes(kv_per_token * c.max_position_embeddings)
    );
    if let Some(m) = &c.mla {
        let mha = c.mha_kv_floats_per_token() * c.kv_cache_dtype.size_bytes();
        println!(
            "latent cache   {} values per token per layer (latent {} + rotary key {}); multi-head attention \
             would cache {} per token, {:.1}x more",
            m.cache_width(),
            m.kv_lora_rank,
            m.rope,
            human_bytes(mha),
            mha as f64 / kv_per_token.max(1) as f64
        );
        if let Some(i) = &m.indexer {
            println!(
                "sparse         each token attends to its {} best positions (lightning indexer: {} heads of {}, \
                 {} more values per token per layer, counted above)",
                i.top_k, i.heads, i.head_dim, i.head_dim
            );
        }
    }
    // the estimate `generate` checks before loading, on the backend chosen
    let quant = args.model.single_quant()?;
    let need =
        MemoryNeed::of(c, &source.weights, &args.model.policy(quant), backend.as_ref(), Workload::one_sequence(c))?;
    let held = match quant {
        Some(q) => format!("quantized to {q}"),
        None if need.weights != bytes => "as held, some widened to f32".to_string(),
        None => "as stored".to_string(),
    };
    println!(
        "memory needed  {} on {} (weights {held} {} + full-context KV cache {} + activations {})",
        human_bytes(need.total()),
        backend.name(),
        human_bytes(need.weights),
        human_bytes(need.kv_cache),
        human_bytes(need.activations)
    );
    match backend.memory_available() {
        Some(free) => println!("available      {} ({})", human_bytes(free as usize), backend.device_description()),
        None => println!("available      unknown ({} does not say)", backend.device_description()),
    }
    Ok(())
}

fn human_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn human_bytes(n: usize) -> String {
    let n = n as f64;
    match n {
        n if n >= (1u64 << 30) as f64 => format!("{:.2} GiB", n / (1u64 << 30) as f64),
        n if n >= (1u64 << 20) as f64 => format!("{:.1} MiB", n / (1u64 << 20) as f64),
        n if n >= 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n => format!("{n} B"),
    }
}
