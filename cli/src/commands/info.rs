//! `ferrum info`: what a model folder holds and what running it costs,
//! read from the headers alone (no weights are loaded).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ferrum_engine::ModelConfig;
use ferrum_engine::config::RopeScaling;
use ferrum_engine::loader::{ModelDir, WeightStore};

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A Hugging Face model folder.
    #[arg(long)]
    pub model: PathBuf,
}

pub fn run(args: &InfoArgs) -> Result<()> {
    let dir = ModelDir::new(&args.model)?;
    let c = ModelConfig::from_file(&dir.config())?;
    let store = WeightStore::open_dir(&dir.root)?;
    let mut params = 0usize;
    let mut bytes = 0usize;
    let mut by_dtype: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, dtype, n) in store.summary() {
        params += n;
        bytes += n * dtype.size_bytes();
        *by_dtype.entry(dtype.name()).or_default() += n;
    }
    let kv_per_token = c.kv_floats_per_token() * 4;
    let windows: Vec<String> = c.layer_windows.iter().map(|w| w.map_or("full".into(), |w| w.to_string())).collect();
    let rope = match &c.rope.scaling {
        RopeScaling::None => format!("theta {}", c.rope.theta),
        RopeScaling::Linear { factor } => format!("theta {}, linear x{factor}", c.rope.theta),
        RopeScaling::Llama3 { factor, .. } => format!("theta {}, llama3 x{factor}", c.rope.theta),
    };
    println!("model          {}", dir.root.display());
    println!("architecture   {}", c.architecture.hf_name());
    println!("layers         {}", c.num_layers);
    println!("hidden         {} (intermediate {})", c.hidden_size, c.intermediate_size);
    println!("heads          {} query, {} key/value, head_dim {}", c.num_heads, c.num_kv_heads, c.head_dim);
    println!("vocab          {}", c.vocab_size);
    println!("context        {}", c.max_position_embeddings);
    println!("rope           {rope}");
    println!("attention      {}", windows.join(" "));
    println!("switches       qkv_bias={} qk_norm={} tied_embeddings={}", c.qkv_bias, c.qk_norm, c.tie_word_embeddings);
    println!("parameters     {} ({})", params, human_count(params));
    let dtypes: Vec<String> = by_dtype.iter().map(|(d, n)| format!("{d}: {}", human_count(*n))).collect();
    println!("dtypes         {}", dtypes.join(", "));
    println!("weights        {}", human_bytes(bytes));
    println!(
        "kv cache       {} per token (f32), {} at full context",
        human_bytes(kv_per_token),
        human_bytes(kv_per_token * c.max_position_embeddings)
    );
    println!(
        "memory needed  {} (weights + full-context KV cache)",
        human_bytes(bytes + kv_per_token * c.max_position_embeddings)
    );
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
