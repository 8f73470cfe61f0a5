//! Everything a model path offers, whatever its format: a Hugging Face
//! folder (config.json, safetensors, tokenizer.json, chat template,
//! generation_config.json) or a single GGUF file (all of it in metadata).

use std::path::{Path, PathBuf};

use crate::chat_template::{ChatTemplate, template_from_tokenizer_config};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::generate::GenerationDefaults;
use crate::loader::gguf::GgufFile;
use crate::loader::{ModelDir, WeightStore, gguf_model};
use crate::tokenizer::Tokenizer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    HuggingFace,
    Gguf,
}

pub struct ModelSource {
    pub path: PathBuf,
    pub format: SourceFormat,
    pub config: ModelConfig,
    pub weights: WeightStore,
    /// None when the source has no tokenizer (then only token ids work).
    pub tokenizer: Option<Tokenizer>,
    /// Jinja source of the chat template, when there is one.
    chat_template: Option<String>,
    pub generation: GenerationDefaults,
}

impl ModelSource {
    /// A `.gguf` file or a Hugging Face model folder.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_file() {
            return Self::open_gguf(path);
        }
        let dir = ModelDir::new(path)?;
        let config = ModelConfig::from_file(&dir.config())?;
        let weights = WeightStore::open_dir(&dir.root)?;
        let tokenizer = dir.tokenizer().exists().then(|| Tokenizer::from_file(&dir.tokenizer())).transpose()?;
        let jinja = dir.chat_template_jinja();
        let chat_template = if jinja.exists() {
            Some(std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?)
        } else {
            template_from_tokenizer_config(&dir.tokenizer_config())?
        };
        let generation = GenerationDefaults::from_file(&dir.generation_config())?;
        Ok(ModelSource {
            path: path.to_path_buf(),
            format: SourceFormat::HuggingFace,
            config,
            weights,
            tokenizer,
            chat_template,
            generation,
        })
    }

    fn open_gguf(path: &Path) -> Result<Self> {
        Self::from_gguf(path, GgufFile::open(path)?)
    }

    /// A GGUF file already opened (or read into memory with
    /// [`GgufFile::from_bytes`]): the config, tokenizer, chat template and
    /// weights from its metadata and tensors.
    pub fn from_gguf(path: &Path, file: GgufFile) -> Result<Self> {
        let config = gguf_model::config(&file)?;
        let vocab = gguf_model::vocab(&file)?;
        let tokenizer = (!vocab.tokens.is_empty()).then(|| vocab.build()).transpose()?;
        let chat_template = file.get_opt::<&str>("tokenizer.chat_template")?.map(str::to_string);
        let weights = WeightStore::from_gguf(file, &config)?;
        Ok(ModelSource {
            path: path.to_path_buf(),
            format: SourceFormat::Gguf,
            config,
            weights,
            tokenizer,
            chat_template,
            generation: GenerationDefaults::default(),
        })
    }

    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            Error::Tokenizer(format!("{} has no tokenizer.json; pass token ids instead of text", self.path.display()))
        })
    }

    pub fn chat_template(&self) -> Result<ChatTemplate> {
        let tok = self.tokenizer()?;
        let source = self
            .chat_template
            .clone()
            .ok_or_else(|| Error::ChatTemplate(format!("{} has no chat template", self.path.display())))?;
        Ok(ChatTemplate::new(source, tok.bos_token.as_deref().unwrap_or(""), tok.eos_token.as_deref().unwrap_or("")))
    }

    /// EOS ids from the config, generation_config.json and the tokenizer's eos_token.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        let mut ids = self.config.eos_token_ids.clone();
        ids.extend(&self.generation.eos_token_ids);
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
