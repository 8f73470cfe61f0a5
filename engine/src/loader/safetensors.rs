//! The safetensors format, read and written here so that every malformed file
//! gets a precise error: an 8-byte little-endian header length, a JSON header
//! `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`,
//! then the data, offsets relative to its start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::file_bytes::FileBytes;
use crate::error::{Error, Result};

/// Element types a safetensors file may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StDtype {
    Bool,
    U8,
    I8,
    F8E4M3,
    F8E5M2,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    I64,
    U64,
    F64,
}

impl StDtype {
    const NAMES: [(&'static str, StDtype, usize); 15] = [
        ("BOOL", StDtype::Bool, 1),
        ("U8", StDtype::U8, 1),
        ("I8", StDtype::I8, 1),
        ("F8_E4M3", StDtype::F8E4M3, 1),
        ("F8_E5M2", StDtype::F8E5M2, 1),
        ("I16", StDtype::I16, 2),
        ("U16", StDtype::U16, 2),
        ("F16", StDtype::F16, 2),
        ("BF16", StDtype::BF16, 2),
        ("I32", StDtype::I32, 4),
        ("U32", StDtype::U32, 4),
        ("F32", StDtype::F32, 4),
        ("I64", StDtype::I64, 8),
        ("U64", StDtype::U64, 8),
        ("F64", StDtype::F64, 8),
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(n, _, _)| *n == name).map(|(_, d, _)| *d)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, d, _)| *d == self).map_or("?", |(n, _, _)| n)
    }

    pub fn size_bytes(self) -> usize {
        Self::NAMES.iter().find(|(_, d, _)| *d == self).map_or(0, |(_, _, s)| *s)
    }
}

/// Where one tensor's bytes are, already checked against the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub dtype: StDtype,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub range: std::ops::Range<usize>,
}

/// A validated safetensors file, memory-mapped (or in memory:
/// [`SafetensorsFile::from_bytes`]).
pub struct SafetensorsFile {
    pub path: PathBuf,
    bytes: FileBytes,
    pub tensors: BTreeMap<String, TensorEntry>,
    pub metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_file_bytes(path, FileBytes::map(path)?)
    }

    /// A safetensors file already in memory; `path` only names it in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        Self::from_file_bytes(path, FileBytes::Owned(bytes.into()))
    }

    fn from_file_bytes(path: &Path, bytes: FileBytes) -> Result<Self> {
        let (tensors, metadata) =
            parse_header(bytes.as_slice()).map_err(|msg| Error::Safetensors { path: path.to_path_buf(), msg })?;
        Ok(SafetensorsFile { path: path.to_path_buf(), bytes, tensors, metadata })
    }

    /// Drops this process's pages of `entry` (see `GgufFile::release`).
    pub fn release(&self, entry: &TensorEntry) {
        self.bytes.release(entry.range.clone());
    }

    pub fn bytes(&self, entry: &TensorEntry) -> &[u8] {
        &self.bytes.as_slice()[entry.range.clone()]
    }
}

/// Validates the whole header: lengths, JSON shape, dtypes, that each
/// tensor's byte size matches dtype x shape, and that ranges neither overlap
/// nor run past the end.
fn parse_header(file: &[u8]) -> std::result::Result<(BTreeMap<String, TensorEntry>, BTreeMap<String, String>), String> {
    if file.len() < 8 {
        return Err(format!("file is {} bytes, shorter than the 8-byte header length", file.len()));
    }
    let header_len = u64::from_le_bytes(file[..8].try_into().expect("8 bytes"));
    let data_start = 8u64
        .checked_add(header_len)
        .filter(|&end| end <= file.len() as u64)
        .ok_or_else(|| format!("header length {header_len} runs past the end of the file ({} bytes)", file.len()))?
        as usize;
    let header: Value =
        serde_json::from_slice(&file[8..data_start]).map_err(|e| format!("header is not valid JSON: {e}"))?;
    let header = header.as_object().ok_or("header is not a JSON object")?;
    let data_len = file.len() - data_start;

    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            let map = info.as_object().ok_or("__metadata__ is not an object")?;
            for (k, v) in map {
                let v = v.as_str().ok_or_else(|| format!("__metadata__.{k} is not a string"))?;
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let entry = parse_entry(info, data_start, data_len).map_err(|m| format!("tensor {name:?}: {m}"))?;
        tensors.insert(name.clone(), entry);
    }

    let mut ranges: Vec<(&str, &std::ops::Range<usize>)> =
        tensors.iter().map(|(n, e)| (n.as_str(), &e.range)).collect();
    ranges.sort_by_key(|(_, r)| (r.start, r.end));
    for pair in ranges.windows(2) {
        let ((a, ra), (b, rb)) = (pair[0], pair[1]);
        if rb.start < ra.end {
            return Err(format!("tensors {a:?} and {b:?} overlap"));
        }
    }
    Ok((tensors, metadata))
}

fn parse_entry(info: &Value, data_start: usize, data_len: usize) -> std::result::Result<TensorEntry, String> {
    let dtype_name = info.get("dtype").and_then(|d| d.as_str()).ok_or("no dtype")?;
    let dtype = StDtype::parse(dtype_name).ok_or_else(|| format!("unknown dtype {dtype_name:?}"))?;
    let shape = info
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or("no shape")?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize).ok_or_else(|| format!("bad dimension {d}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let offsets = info.get("data_offsets").and_then(|o| o.as_array()).ok_or("no data_offsets")?;
    let [begin, end] = offsets.as_slice() else {
        return Err("data_offsets must be [begin, end]".into());
    };
    let (begin, end) = match (begin.as_u64(), end.as_u64()) {
        (Some(b), Some(e)) if b <= e => (b as usize, e as usize),
        _ => return Err(format!("bad data_offsets [{begin}, {end}]")),
    };
    if end > data_len {
        return Err(format!("data_offsets end {end} is past the {data_len} bytes of data"));
    }
    let bytes = shape.iter().try_fold(dtype.size_bytes(), |acc, &d| acc.checked_mul(d)).ok_or("shape overflows")?;
    if bytes != end - begin {
        return Err(format!("{dtype_name} {shape:?} needs {bytes} bytes but data_offsets span {}", end - begin));
    }
    Ok(TensorEntry { dtype, shape, range: data_start + begin..data_start + end })
}

/// A sharded checkpoint's `model.safetensors.index.json`: which shard file
/// holds each tensor (`{"weight_map": {tensor: file}, ...}`).
#[derive(Clone, Debug, PartialEq)]
pub struct ShardIndex {
    /// Tensor name -> shard file name.
    pub weight_map: BTreeMap<String, String>,
    /// Every shard file named, sorted, once each.
    pub shards: Vec<String>,
}

impl ShardIndex {
    /// Parses the index; a shard must be a plain file name (no `/`, `\` or
    /// `..`), so an index cannot point outside its folder.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or("no `weight_map` object")?;
        let mut weight_map = BTreeMap::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| format!("shard of {tensor:?} is not a string"))?;
            if file.contains('/') || file.contains('\\') || file.contains("..") {
                return Err(format!("shard name {file:?} must be a plain file name"));
            }
            weight_map.insert(tensor.clone(), file.to_string());
        }
        let mut shards: Vec<String> = weight_map.values().cloned().collect();
        shards.sort_unstable();
        shards.dedup();
        Ok(ShardIndex { weight_map, shards })
    }
}

/// One tensor to write: its dtype, shape and little-endian bytes.
pub struct TensorToWrite<'a> {
    pub name: String,
    pub dtype: StDtype,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

/// Writes a safetensors file (tensors in the order given).
pub fn write_safetensors(path: &Path, tensors: &[TensorToWrite<'_>]) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for t in tensors {
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": t.dtype.name(),
                "shape": t.shape,
                "data_offsets": [offset, offset + t.data.len()],
            }),
        );
        offset += t.data.len();
    }
    let mut header = serde_json::to_vec(&Value::Object(header)).expect("a JSON map serialises");
    while !header.len().is_multiple_of(8) {
        header.push(b' '); // keeps the data 8-byte aligned
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for t in tensors {
        out.extend_from_slice(t.data);
    }
    std::fs::write(path, out).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_index_lists_each_shard_once_and_refuses_paths() {
        let index = ShardIndex::parse(
            r#"{"metadata": {"total_size": 8}, "weight_map": {"b": "model-2.safetensors", "a": "model-1.safetensors",
            "c": "model-1.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(index.shards, ["model-1.safetensors", "model-2.safetensors"]);
        assert_eq!(index.weight_map["c"], "model-1.safetensors");
        let err = |text: &str| ShardIndex::parse(text).unwrap_err();
        assert!(err(r#"{"weight_map": {"a": "../x.safetensors"}}"#).contains("plain file name"));
        assert!(err(r#"{"weight_map": {"a": 3}}"#).contains("not a string"));
        assert!(err(r#"{"weight_map": []}"#).contains("weight_map"));
        assert!(err("{").contains("not valid JSON"));
    }

    #[test]
    fn a_file_in_memory_parses_like_one_on_disk() {
        let header = br#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0, 0, 128, 63, 0, 0, 0, 64]);
        let file = SafetensorsFile::from_bytes(Path::new("mem.safetensors"), bytes).unwrap();
        assert_eq!(file.tensors["w"].shape, [2]);
        assert_eq!(bytemuck::pod_collect_to_vec::<u8, f32>(file.bytes(&file.tensors["w"])), [1.0, 2.0]);
        let err = SafetensorsFile::from_bytes(Path::new("mem.safetensors"), vec![1, 2]).err().unwrap().to_string();
        assert!(err.contains("mem.safetensors") && err.contains("shorter than the 8-byte header"), "{err}");
    }
}
