//! Flags shared by the commands that load a model, and what they load.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ferrum_engine::Model;
use ferrum_engine::chat_template::ChatTemplate;
use ferrum_engine::generate::{GenerateOptions, GenerationDefaults};
use ferrum_engine::loader::ModelDir;
use ferrum_engine::sampler::SamplingParams;
use ferrum_engine::tokenizer::Tokenizer;

use crate::backends::{self, BackendChoice};

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// A Hugging Face model folder (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
}

/// A model on its backend with the files around it.
pub struct Loaded {
    pub dir: ModelDir,
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    pub defaults: GenerationDefaults,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Loaded> {
        let backend = backends::open(self.backend)?;
        let dir = ModelDir::new(&self.model)?;
        let model = Model::load(&dir.root, backend).with_context(|| format!("loading {}", self.model.display()))?;
        let tokenizer = match dir.tokenizer().exists() {
            true => Some(Tokenizer::from_file(&dir.tokenizer())?),
            false => None,
        };
        let defaults = GenerationDefaults::from_file(&dir.generation_config())?;
        Ok(Loaded { dir, model, tokenizer, defaults })
    }
}

impl Loaded {
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().with_context(|| {
            format!("{} has no tokenizer.json; pass token ids instead of text", self.dir.root.display())
        })
    }

    pub fn chat_template(&self) -> Result<ChatTemplate> {
        let tok = self.tokenizer()?;
        Ok(ChatTemplate::from_model_dir(&self.dir, tok.bos_token.as_deref(), tok.eos_token.as_deref())?)
    }

    /// EOS ids from config.json, generation_config.json and the tokenizer's eos_token.
    pub fn eos_ids(&self) -> Vec<u32> {
        let mut ids = self.model.config.eos_token_ids.clone();
        ids.extend(&self.defaults.eos_token_ids);
        if let Some(t) = &self.tokenizer
            && let Some(id) = t.eos_token.as_deref().and_then(|e| t.token_to_id(e))
        {
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Sampling flags; any flag not given falls back to generation_config.json.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Greedy decoding (same as --temperature 0).
    #[arg(long)]
    pub greedy: bool,
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long)]
    pub min_p: Option<f32>,
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    pub fn options(&self, loaded: &Loaded) -> Result<GenerateOptions> {
        let mut p: SamplingParams = loaded.defaults.sampling();
        if let Some(t) = self.temperature {
            p.temperature = t;
        }
        if self.greedy {
            p.temperature = 0.0;
        }
        p.top_k = self.top_k.unwrap_or(p.top_k);
        p.top_p = self.top_p.unwrap_or(p.top_p);
        p.min_p = self.min_p.unwrap_or(p.min_p);
        p.repetition_penalty = self.repetition_penalty.unwrap_or(p.repetition_penalty);
        p.presence_penalty = self.presence_penalty;
        p.frequency_penalty = self.frequency_penalty;
        p.seed = self.seed;
        p.validate().map_err(anyhow::Error::msg)?;
        Ok(GenerateOptions {
            max_tokens: self.max_tokens.or(loaded.defaults.max_new_tokens).unwrap_or(256),
            sampling: p,
            eos_token_ids: loaded.eos_ids(),
            stop_strings: self.stop.clone(),
        })
    }
}

/// Token ids given on the command line.
#[derive(Clone, Debug)]
pub struct TokenIds(pub Vec<u32>);

/// "1,2,3" -> [1, 2, 3]
pub fn parse_ids(s: &str) -> Result<TokenIds, String> {
    s.split(',')
        .map(|t| t.trim().parse::<u32>().map_err(|e| format!("bad token id {t:?}: {e}")))
        .collect::<Result<_, _>>()
        .map(TokenIds)
}
