//! Loading a Hugging Face model folder: the weights (single or sharded
//! safetensors, memory-mapped) and the files around them.

mod experts;
mod file_bytes;
pub mod gguf;
pub mod gguf_model;
pub mod safetensors;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::quant::{GgmlBlocks, GgmlType, MxScaleRule, Mxfp4, QuantFormat, QuantizedMatrix};
use gguf::{GgufFile, TensorInfo};
use gguf_model::{GgufTensorRef, Transform};
pub use safetensors::{SafetensorsFile, ShardIndex, StDtype, TensorEntry, TensorToWrite, write_safetensors};

/// Every tensor of a checkpoint by its Hugging Face name: the shards of a
/// safetensors checkpoint, or a GGUF file whose tensors are renamed. GGUF
/// float tensors read as stored; its block-quantized ones read dequantized
/// to f32 by [`WeightStore::get`], or packed as stored by
/// [`WeightStore::quantized`].
pub struct WeightStore {
    kind: StoreKind,
}

enum StoreKind {
    Safetensors {
        files: Vec<SafetensorsFile>,
        /// tensor name -> index into `files`
        index: BTreeMap<String, usize>,
        /// each layer's experts and router under the names the decoder reads
        views: BTreeMap<String, experts::View>,
        /// why an expert view could not be made, by its name
        broken: experts::Broken,
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
            Self::from_safetensors(vec![SafetensorsFile::open(&single)?])
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
        let index = ShardIndex::parse(&text).map_err(bad)?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut files = Vec::new();
        for name in &index.shards {
            let path = dir.join(name);
            if !path.exists() {
                return Err(bad(format!("shard {name:?} named in the index is missing")));
            }
            files.push(SafetensorsFile::open(&path)?);
        }
        let store = Self::from_safetensors(files)?;
        for tensor in index.weight_map.keys() {
            if !store.contains(tensor) {
                return Err(bad(format!("tensor {tensor:?} is in the index but in no shard")));
            }
        }
        Ok(store)
    }

    /// The tensors of safetensors files (the shards of one checkpoint) under
    /// one name table, with each layer's experts gathered (`experts.rs`).
    pub fn from_safetensors(files: Vec<SafetensorsFile>) -> Result<Self> {
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
        let entries = index.iter().map(|(n, &i)| (n.as_str(), &files[i].tensors[n]));
        let (views, broken) = experts::views(entries);
        Ok(WeightStore { kind: StoreKind::Safetensors { files, index, views, broken } })
    }

    pub fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match &self.kind {
            StoreKind::Safetensors { index, views, .. } => {
                Box::new(index.keys().chain(views.keys()).map(String::as_str))
            }
            StoreKind::Gguf { map, .. } => Box::new(map.keys().map(String::as_str)),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.kind {
            StoreKind::Safetensors { index, views, .. } => index.contains_key(name) || views.contains_key(name),
            StoreKind::Gguf { map, .. } => map.contains_key(name),
        }
    }

    fn missing(name: &str) -> Error {
        Error::Weight { name: name.to_string(), msg: "not in the checkpoint".into() }
    }

    /// [`WeightStore::missing`], or why the experts under `name` could not be gathered.
    fn not_found(broken: &experts::Broken, name: &str) -> Error {
        match broken.get(name) {
            Some(why) => Error::Weight { name: name.to_string(), msg: why.clone() },
            None => Self::missing(name),
        }
    }

    /// The shape `get` will return, without reading the data.
    pub fn shape_of(&self, name: &str) -> Result<&[usize]> {
        match &self.kind {
            StoreKind::Safetensors { files, index, views, broken } => match (index.get(name), views.get(name)) {
                (Some(&i), _) => Ok(&files[i].tensors[name].shape),
                (None, Some(view)) => Ok(&view.shape),
                (None, None) => Err(Self::not_found(broken, name)),
            },
            StoreKind::Gguf { file, map } => Ok(&Self::gguf_tensor(file, map, name)?.0.shape),
        }
    }

    /// The dtype `get` will return, without reading the data.
    pub fn dtype_of(&self, name: &str) -> Result<StDtype> {
        match &self.kind {
            StoreKind::Safetensors { files, index, views, broken } => match (index.get(name), views.get(name)) {
                (Some(&i), _) => Ok(files[i].tensors[name].dtype),
                (None, Some(view)) => Ok(view.dtype),
                (None, None) => Err(Self::not_found(broken, name)),
            },
            StoreKind::Gguf { file, map } => {
                let (source, info) = Self::gguf_tensor(file, map, name)?;
                Ok(gguf_float(info.ggml_type, source.transform).unwrap_or(StDtype::F32))
            }
        }
    }

    fn gguf_tensor<'a>(
        file: &'a GgufFile,
        map: &'a BTreeMap<String, GgufTensorRef>,
        name: &str,
    ) -> Result<(&'a GgufTensorRef, &'a TensorInfo)> {
        let source = map.get(name).ok_or_else(|| Self::missing(name))?;
        let info = file.tensor(&source.gguf_name).ok_or_else(|| Self::missing(&source.gguf_name))?;
        Ok((source, info))
    }

    /// The format [`WeightStore::quantized`] gives `name` in: set for a
    /// GGUF matrix stored in a block format (MXFP4 included).
    pub fn stored_quant(&self, name: &str) -> Option<QuantFormat> {
        let StoreKind::Gguf { file, map } = &self.kind else { return None };
        let (source, info) = Self::gguf_tensor(file, map, name).ok()?;
        if source.shape.len() != 2 || source.transform == Transform::MinusOne {
            return None;
        }
        match info.ggml_type {
            GgmlType::MXFP4 => Some(QuantFormat::Mxfp4(MxScaleRule::Ocp)),
            ty if ty.is_packed() => Some(QuantFormat::Ggml(ty)),
            _ => None,
        }
    }

    /// Matrix `name` packed as stored, in [`WeightStore::stored_quant`]'s
    /// format; the blocks are borrowed from the file's memory map unless a
    /// transform reorders them.
    pub fn quantized(&self, name: &str) -> Result<QuantizedMatrix> {
        let StoreKind::Gguf { file, map } = &self.kind else {
            return Err(Error::Weight { name: name.into(), msg: "not stored in a GGUF block format".into() });
        };
        let (source, info) = Self::gguf_tensor(file, map, name)?;
        let bad = |e: Error| Error::Weight { name: name.into(), msg: e.to_string() };
        if self.stored_quant(name).is_none() {
            return Err(Error::Weight { name: name.into(), msg: format!("{} is not kept packed", info.ggml_type) });
        }
        let (rows, cols) = (source.shape[0], source.shape[1]);
        let bytes = match source.transform {
            Transform::UnpermuteRows { heads } => {
                gguf_model::unpermute_rows(file.tensor_bytes(info), rows, info.range.len() / rows, heads)?.into()
            }
            Transform::None | Transform::MinusOne => file.shared_bytes(info),
        };
        match info.ggml_type {
            GgmlType::MXFP4 => Mxfp4::from_ggml(rows, cols, &bytes).map(QuantizedMatrix::Mxfp4),
            ty => GgmlBlocks::new(ty, rows, cols, bytes).map(QuantizedMatrix::Ggml),
        }
        .map_err(bad)
    }

    /// Says that tensor `name` has been copied (uploaded) and its stored
    /// bytes will not be read again: a memory-mapped file's pages of it are
    /// dropped from memory, so loading costs the copy only.
    pub fn release(&self, name: &str) {
        match &self.kind {
            StoreKind::Safetensors { files, index, views, .. } => {
                let parts = views.get(name).map_or_else(|| vec![name], |v| v.parts());
                for part in parts {
                    if let Some(&i) = index.get(part) {
                        files[i].release(&files[i].tensors[part]);
                    }
                }
            }
            StoreKind::Gguf { file, map } => {
                if let Ok((_, info)) = Self::gguf_tensor(file, map, name) {
                    file.release(info);
                }
            }
        }
    }

    pub fn get(&self, name: &str) -> Result<RawTensor<'_>> {
        match &self.kind {
            StoreKind::Safetensors { files, index, views, broken } => {
                if let Some(&i) = index.get(name) {
                    let entry = &files[i].tensors[name];
                    return Ok(RawTensor {
                        dtype: entry.dtype,
                        shape: &entry.shape,
                        bytes: Cow::Borrowed(files[i].bytes(entry)),
                    });
                }
                let view = views.get(name).ok_or_else(|| Self::not_found(broken, name))?;
                // a part's rows: of the stored tensor flattened to [rows, last dim]
                let stored = |part: &str| {
                    let file = &files[index[part]];
                    let entry = &file.tensors[part];
                    (file.bytes(entry), &entry.shape)
                };
                let rows = |(part, range): &(String, Range<usize>)| {
                    let (bytes, shape) = stored(part);
                    let row_bytes =
                        bytes.len() / shape[..shape.len().saturating_sub(1)].iter().product::<usize>().max(1);
                    &bytes[range.start * row_bytes..range.end * row_bytes]
                };
                let bytes = match &view.source {
                    experts::Source::Rows(parts) => match &parts[..] {
                        [part] => Cow::Borrowed(rows(part)),
                        parts => Cow::Owned(parts.iter().flat_map(|p| rows(p).iter().copied()).collect()),
                    },
                    experts::Source::Strided { name: part, rows, first, step } => {
                        Cow::Owned(experts::gather_rows(stored(part).0, *rows, *first, *step))
                    }
                    experts::Source::Columns { name: part, first, step } => {
                        let (bytes, shape) = stored(part);
                        // a bias [E, n] is a [E, 1, n] matrix
                        let shape = if let [e, n] = shape[..] { vec![e, 1, n] } else { shape.clone() };
                        Cow::Owned(experts::gather_columns(bytes, &shape, view.dtype.size_bytes(), *first, *step))
                    }
                };
                Ok(RawTensor { dtype: view.dtype, shape: &view.shape, bytes })
            }
            StoreKind::Gguf { file, map } => {
                let (source, info) = Self::gguf_tensor(file, map, name)?;
                if let Some(dtype) = gguf_float(info.ggml_type, source.transform) {
                    let stored = file.tensor_bytes(info);
                    let bytes = match source.transform {
                        Transform::UnpermuteRows { heads } => {
                            let rows = source.shape[0];
                            Cow::Owned(gguf_model::unpermute_rows(stored, rows, stored.len() / rows.max(1), heads)?)
                        }
                        Transform::None | Transform::MinusOne => Cow::Borrowed(stored),
                    };
                    return Ok(RawTensor { dtype, shape: &source.shape, bytes });
                }
                let values = gguf_model::apply(source.transform, &source.shape, file.dequantize(info)?)?;
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                Ok(RawTensor { dtype: StDtype::F32, shape: &source.shape, bytes: Cow::Owned(bytes) })
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

/// The dtype a GGUF tensor of `ty` reads as by [`WeightStore::get`]: float
/// types as stored, `None` for block types and for tensors whose transform
/// needs values (both are read dequantized to f32).
fn gguf_float(ty: GgmlType, transform: Transform) -> Option<StDtype> {
    let dtype = match ty {
        GgmlType::F32 => StDtype::F32,
        GgmlType::F16 => StDtype::F16,
        GgmlType::BF16 => StDtype::BF16,
        _ => return None,
    };
    (transform != Transform::MinusOne).then_some(dtype)
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
