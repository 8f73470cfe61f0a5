//! Loading a Hugging Face model folder: the weights (single or sharded
//! safetensors, memory-mapped) and the files around them.

pub mod gguf;
pub mod gguf_model;
pub mod safetensors;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use gguf::GgufFile;
use gguf_model::GgufTensorRef;
pub use safetensors::{SafetensorsFile, StDtype, TensorEntry, TensorToWrite, write_safetensors};

/// Every tensor of a checkpoint by its Hugging Face name: the shards of a
/// safetensors checkpoint, or a GGUF file whose tensors are renamed and
/// dequantized to f32 when read.
pub struct WeightStore {
    kind: StoreKind,
}

enum StoreKind {
    Safetensors {
        files: Vec<SafetensorsFile>,
        /// tensor name -> index into `files`
        index: BTreeMap<String, usize>,
    },
    Gguf {
        file: GgufFile,
        map: BTreeMap<String, GgufTensorRef>,
    },
}

/// One stored tensor: borrowed from a memory map, or made when read.
#[derive(Clone, Debug)]
pub struct RawTensor<'a> {
    pub dtype: StDtype,
    pub shape: &'a [usize],
    pub bytes: Cow<'a, [u8]>,
}

/// A tensor as stored, for `ferrum info`.
#[derive(Clone, Debug)]
pub struct StoredTensor<'a> {
    pub name: &'a str,
    /// The stored type: a safetensors dtype or a ggml type (Q4_1, ...)
    pub dtype: &'static str,
    pub elements: usize,
    pub bytes: usize,
}

impl WeightStore {
    /// Opens `model.safetensors`, or every shard named by
    /// `model.safetensors.index.json`, in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        if index_path.exists() {
            Self::open_sharded(&index_path)
        } else if single.exists() {
            Self::from_files(vec![SafetensorsFile::open(&single)?])
        } else {
            Err(Error::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors or model.safetensors.index.json in this folder",
                ),
            ))
        }
    }

    /// A GGUF file's tensors under Hugging Face names (see `gguf_model`).
    pub fn from_gguf(file: GgufFile, config: &ModelConfig) -> Result<Self> {
        let map = gguf_model::tensor_map(&file, config)?;
        Ok(WeightStore { kind: StoreKind::Gguf { file, map } })
    }

    fn open_sharded(index_path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
        let bad = |msg: String| Error::Safetensors { path: index_path.to_path_buf(), msg };
        let json: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let map =
            json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no `weight_map` object".into()))?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<&str> = Vec::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| bad(format!("shard of {tensor:?} is not a string")))?;
            if file.contains('/') || file.contains('\\') || file.contains("..") {
                return Err(bad(format!("shard name {file:?} must be a plain file name")));
            }
            if !shard_names.contains(&file) {
                shard_names.push(file);
            }
        }
        shard_names.sort_unstable();
        let mut files = Vec::new();
        for name in &shard_names {
            let path = dir.join(name);
            if !path.exists() {
                return Err(bad(format!("shard {name:?} named in the index is missing")));
            }
            files.push(SafetensorsFile::open(&path)?);
        }
        let store = Self::from_files(files)?;
        for tensor in map.keys() {
            if !store.contains(tensor) {
                return Err(bad(format!("tensor {tensor:?} is in the index but in no shard")));
            }
        }
        Ok(store)
    }

    fn from_files(files: Vec<SafetensorsFile>) -> Result<Self> {
        let mut index = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            for name in f.tensors.keys() {
                if let Some(prev) = index.insert(name.clone(), i) {
                    return Err(Error::Safetensors {
                        path: f.path.clone(),
                        msg: format!("tensor {name:?} is also in {}", files[prev].path.display()),
                    });
                }
            }
        }
        Ok(WeightStore { kind: StoreKind::Safetensors { files, index } })
    }

    pub fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match &self.kind {
            StoreKind::Safetensors { index, .. } => Box::new(index.keys().map(String::as_str)),
            StoreKind::Gguf { map, .. } => Box::new(map.keys().map(String::as_str)),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.kind {
            StoreKind::Safetensors { index, .. } => index.contains_key(name),
            StoreKind::Gguf { map, .. } => map.contains_key(name),
        }
    }

    fn missing(name: &str) -> Error {
        Error::Weight { name: name.to_string(), msg: "not in the checkpoint".into() }
    }

    /// The dtype `get` will return, without reading the data.
    pub fn dtype_of(&self, name: &str) -> Result<StDtype> {
        match &self.kind {
            StoreKind::Safetensors { files, index } => {
                let i = index.get(name).ok_or_else(|| Self::missing(name))?;
                Ok(files[*i].tensors[name].dtype)
            }
            StoreKind::Gguf { map, .. } => map.get(name).map(|_| StDtype::F32).ok_or_else(|| Self::missing(name)),
        }
    }

    pub fn get(&self, name: &str) -> Result<RawTensor<'_>> {
        match &self.kind {
            StoreKind::Safetensors { files, index } => {
                let file = index.get(name).map(|&i| &files[i]).ok_or_else(|| Self::missing(name))?;
                let entry = &file.tensors[name];
                Ok(RawTensor { dtype: entry.dtype, shape: &entry.shape, bytes: Cow::Borrowed(file.bytes(entry)) })
            }
            StoreKind::Gguf { file, map } => {
                let source = map.get(name).ok_or_else(|| Self::missing(name))?;
                let info = file.tensor(&source.gguf_name).ok_or_else(|| Self::missing(&source.gguf_name))?;
                let values = gguf_model::apply(source.transform, &info.shape, file.dequantize(info)?)?;
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                Ok(RawTensor { dtype: StDtype::F32, shape: &info.shape, bytes: Cow::Owned(bytes) })
            }
        }
    }

    /// Every tensor as stored (including ones the decoder does not read).
    pub fn stored(&self) -> Vec<StoredTensor<'_>> {
        match &self.kind {
            StoreKind::Safetensors { files, .. } => files
                .iter()
                .flat_map(|f| f.tensors.iter())
                .map(|(n, e)| StoredTensor {
                    name: n,
                    dtype: e.dtype.name(),
                    elements: e.shape.iter().product(),
                    bytes: e.range.len(),
                })
                .collect(),
            StoreKind::Gguf { file, .. } => file
                .tensors()
                .iter()
                .map(|t| StoredTensor {
                    name: &t.name,
                    dtype: t.ggml_type.name(),
                    elements: t.n_elements,
                    bytes: t.range.len(),
                })
                .collect(),
        }
    }
}

/// The files of a Hugging Face model folder, by role.
#[derive(Clone, Debug)]
pub struct ModelDir {
    pub root: PathBuf,
}

impl ModelDir {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(Error::io(&root, std::io::Error::new(std::io::ErrorKind::NotFound, "model folder not found")));
        }
        Ok(ModelDir { root })
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }

    pub fn tokenizer(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }

    pub fn tokenizer_config(&self) -> PathBuf {
        self.root.join("tokenizer_config.json")
    }

    pub fn generation_config(&self) -> PathBuf {
        self.root.join("generation_config.json")
    }

    pub fn chat_template_jinja(&self) -> PathBuf {
        self.root.join("chat_template.jinja")
    }
}
