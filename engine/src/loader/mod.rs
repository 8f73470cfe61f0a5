//! Loading a Hugging Face model folder: the weights (single or sharded
//! safetensors, memory-mapped) and the files around them.

pub mod gguf;
pub mod safetensors;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
pub use safetensors::{SafetensorsFile, StDtype, TensorEntry, TensorToWrite, write_safetensors};

/// Every tensor of a checkpoint, across its shards.
pub struct WeightStore {
    files: Vec<SafetensorsFile>,
    /// tensor name -> index into `files`
    index: BTreeMap<String, usize>,
}

/// A borrowed view of one stored tensor.
#[derive(Clone, Copy, Debug)]
pub struct RawTensor<'a> {
    pub dtype: StDtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
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
            if !store.index.contains_key(tensor) {
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
        Ok(WeightStore { files, index })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Result<RawTensor<'_>> {
        let file = self
            .index
            .get(name)
            .map(|&i| &self.files[i])
            .ok_or_else(|| Error::Weight { name: name.to_string(), msg: "not in the checkpoint".into() })?;
        let entry = &file.tensors[name];
        Ok(RawTensor { dtype: entry.dtype, shape: &entry.shape, bytes: file.bytes(entry) })
    }

    /// (dtype, element count) of every tensor.
    pub fn summary(&self) -> impl Iterator<Item = (&str, StDtype, usize)> {
        self.files
            .iter()
            .flat_map(|f| f.tensors.iter().map(|(n, e)| (n.as_str(), e.dtype, e.shape.iter().product::<usize>())))
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
