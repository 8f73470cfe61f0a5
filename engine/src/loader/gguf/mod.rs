//! GGUF, llama.cpp's single-file model format, read here over a memory map so
//! that every malformed file gets a precise error (never a panic, never an
//! allocation larger than the file justifies).
//!
//! Versions 2 and 3 (the same bytes for little-endian files; version 1 used
//! 32-bit lengths and big-endian files exist since version 3: both refused).
//! Everything is little-endian:
//!
//! ```text
//! "GGUF" | version: u32 | tensor_count: u64 | kv_count: u64
//! kv_count x     { key: string, value_type: u32, value }          (metadata.rs)
//! tensor_count x { name: string, n_dims: u32, dims: [u64; n_dims],
//!                  ggml_type: u32, offset: u64 }
//! zero padding up to a multiple of `general.alignment` (u32, default 32)
//! tensor data: tensor i at data_start + offset_i, each offset a multiple of
//!              the alignment; bytes = dims product / block_size * type_size
//! ```
//!
//! `string` is a u64 byte length followed by that many UTF-8 bytes. `dims` are
//! ggml's `ne`: innermost (contiguous) first, so a row-major `(rows, cols)`
//! matrix is stored as `[cols, rows]`; [`TensorInfo::shape`] is the row-major
//! shape. Block types need the innermost dimension to be a whole number of
//! blocks; dequantize with [`dequantize`] or [`GgufFile::dequantize`].

mod metadata;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::file_bytes::FileBytes;
use crate::bytes::SharedBytes;
use crate::error::{Error, Result};
pub use crate::quant::ggml::{GgmlType, dequantize, dequantize_into};
pub use metadata::{FromMeta, MAX_ARRAY_DEPTH, MetaArray, MetaType, MetaValue};

/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;

/// One tensor's description, already checked against the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ggml_type: GgmlType,
    /// The dimensions as stored (ggml's `ne`): innermost, contiguous first.
    pub dims: Vec<usize>,
    /// Row-major shape, outermost first: `dims` reversed. A Hugging Face
    /// `(out_features, in_features)` weight is stored with dims `[in, out]`
    /// and has shape `[out, in]` here.
    pub shape: Vec<usize>,
    /// Product of the dims (1 for a 0-dimensional tensor).
    pub n_elements: usize,
    /// Offset from the start of the data section, as stored.
    pub offset: u64,
    /// Absolute byte range in the file.
    pub range: Range<usize>,
}

/// A validated GGUF file, memory-mapped (or in memory: [`GgufFile::from_bytes`]).
pub struct GgufFile {
    pub path: PathBuf,
    bytes: FileBytes,
    version: u32,
    alignment: usize,
    data_offset: usize,
    metadata: BTreeMap<String, MetaValue>,
    /// In file order.
    tensors: Vec<TensorInfo>,
    /// tensor name -> index into `tensors`
    index: BTreeMap<String, usize>,
}

/// A GGUF problem as an [`Error`]. `Error` has no GGUF variant yet, so this is
/// an `InvalidData` I/O error: it displays as `{path}: {msg}`.
fn gguf_error(path: &Path, msg: String) -> Error {
    Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_file_bytes(path, FileBytes::map(path)?)
    }

    /// A GGUF file already in memory; `path` only names it in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        Self::from_file_bytes(path, FileBytes::Owned(bytes.into()))
    }

    fn from_file_bytes(path: &Path, bytes: FileBytes) -> Result<Self> {
        let parsed = parse(bytes.as_slice()).map_err(|msg| gguf_error(path, format!("malformed GGUF: {msg}")))?;
        let index = parsed.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            bytes,
            version: parsed.version,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            index,
        })
    }

    /// 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `general.alignment`, or [`DEFAULT_ALIGNMENT`].
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Absolute file offset of the data section (tensor offsets count from here).
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    pub fn metadata(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// Every metadata entry, sorted by key.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &MetaValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value of `key` as a `T`; an error if it is missing or of another
    /// type (integers convert between widths when the value fits, see
    /// [`FromMeta`]).
    pub fn get<'a, T: FromMeta<'a>>(&'a self, key: &str) -> Result<T> {
        self.get_opt(key)?.ok_or_else(|| gguf_error(&self.path, format!("metadata key {key:?} is missing")))
    }

    /// Like [`GgufFile::get`], but `Ok(None)` when the key is absent.
    pub fn get_opt<'a, T: FromMeta<'a>>(&'a self, key: &str) -> Result<Option<T>> {
        let Some(value) = self.metadata.get(key) else {
            return Ok(None);
        };
        T::from_meta(value).map(Some).ok_or_else(|| {
            gguf_error(
                &self.path,
                format!("metadata key {key:?} holds {}, expected {}", describe_value(value), T::EXPECTED),
            )
        })
    }

    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get(key)
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)
    }

    pub fn get_i32(&self, key: &str) -> Result<i32> {
        self.get(key)
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.get(key)
    }

    /// An f64, or an f32 widened exactly.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key)
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.get(key)
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)
    }

    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        self.get(key)
    }

    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        self.get(key)
    }

    pub fn get_i32_array(&self, key: &str) -> Result<&[i32]> {
        self.get(key)
    }

    pub fn get_array(&self, key: &str) -> Result<&MetaArray> {
        self.get(key)
    }

    /// `general.architecture`, e.g. `"llama"`; architecture keys are
    /// prefixed with it (`llama.block_count`).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The stored bytes of a tensor of this file (from [`GgufFile::tensors`]).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.bytes.as_slice()[info.range.clone()]
    }

    /// The stored bytes of a tensor, shared with the memory map (no copy).
    pub fn shared_bytes(&self, info: &TensorInfo) -> SharedBytes {
        self.bytes.shared(info.range.clone()).expect("tensor ranges lie inside the file")
    }

    /// Drops this process's pages of a tensor's bytes from memory once a
    /// copy of them is all that is used (they are read from the file again
    /// if touched), so a model's memory is not its copy plus the mapping.
    pub fn release(&self, info: &TensorInfo) {
        self.bytes.release(info.range.clone());
    }

    /// A tensor of this file as f32, row-major in [`TensorInfo::shape`].
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        dequantize(info.ggml_type, self.tensor_bytes(info), info.n_elements)
            .map_err(|e| Error::Weight { name: info.name.clone(), msg: e.to_string() })
    }
}

/// A value for an error message: `u32 7`, `string "llama"`, `array[string; 5]`.
fn describe_value(value: &MetaValue) -> String {
    match value {
        MetaValue::U8(v) => format!("u8 {v}"),
        MetaValue::I8(v) => format!("i8 {v}"),
        MetaValue::U16(v) => format!("u16 {v}"),
        MetaValue::I16(v) => format!("i16 {v}"),
        MetaValue::U32(v) => format!("u32 {v}"),
        MetaValue::I32(v) => format!("i32 {v}"),
        MetaValue::U64(v) => format!("u64 {v}"),
        MetaValue::I64(v) => format!("i64 {v}"),
        MetaValue::F32(v) => format!("f32 {v}"),
        MetaValue::F64(v) => format!("f64 {v}"),
        MetaValue::Bool(v) => format!("bool {v}"),
        MetaValue::String(s) if s.chars().count() > 40 => {
            format!("string {:?}...", s.chars().take(40).collect::<String>())
        }
        MetaValue::String(s) => format!("string {s:?}"),
        MetaValue::Array(a) => a.describe(),
    }
}

/// A bounds-checked little-endian reader over the mapped file.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn pos(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "truncated: {n} bytes needed at offset {}, but the file ends at {}",
                self.pos,
                self.buf.len()
            ));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }

    /// u64 length + UTF-8 bytes. The length is checked against the bytes left
    /// before anything is allocated.
    fn string(&mut self) -> std::result::Result<String, String> {
        let at = self.pos;
        let len = self.u64()?;
        if len > self.remaining() as u64 {
            return Err(format!(
                "string length {len} at offset {at} runs past the end of the file ({} bytes left)",
                self.remaining()
            ));
        }
        let bytes = self.take(len as usize)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| format!("string at offset {at} is not valid UTF-8 ({e})"))
    }
}

struct Parsed {
    version: u32,
    alignment: usize,
    data_offset: usize,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
}

/// The fewest bytes a metadata entry takes: key length, value type, 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// The fewest bytes a tensor info takes: name length, n_dims, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// Validates the whole file: header, metadata, tensor infos, alignment, and
/// that every tensor's bytes lie inside the file without overlapping another.
fn parse(file: &[u8]) -> std::result::Result<Parsed, String> {
    let mut c = Cursor { buf: file, pos: 0 };
    let magic = &file[..file.len().min(4)];
    if magic != b"GGUF" {
        return Err(format!("bad magic {:?} (bytes {magic:02x?}), expected \"GGUF\"", String::from_utf8_lossy(magic)));
    }
    if file.len() < 24 {
        return Err(format!("truncated: file is {} bytes, shorter than the 24-byte GGUF header", file.len()));
    }
    c.take(4)?;
    let version = c.u32()?;
    match version {
        2 | 3 => {}
        1 => return Err("GGUF version 1 is not supported (only 2 and 3)".into()),
        v if v != 0 && v & 0xFFFF == 0 => {
            return Err(format!(
                "version field reads {v:#010x}: a big-endian GGUF? Only little-endian files are supported"
            ));
        }
        v => return Err(format!("unsupported GGUF version {v} (supported: 2, 3)")),
    }
    let tensor_count = c.u64()?;
    let kv_count = c.u64()?;
    check_count(kv_count, MIN_KV_BYTES, "metadata entries", &c)?;
    check_count(tensor_count, MIN_TENSOR_INFO_BYTES, "tensors", &c)?;

    let mut metadata = BTreeMap::new();
    for i in 0..kv_count {
        let at = c.pos();
        let key = c.string().map_err(|e| format!("metadata entry {i} of {kv_count} (offset {at}): key: {e}"))?;
        let ctx = |e: String| format!("metadata key {key:?}: {e}");
        let type_at = c.pos();
        let id = c.u32().map_err(ctx)?;
        let ty = MetaType::from_id(id).ok_or_else(|| ctx(format!("unknown value type {id} at offset {type_at}")))?;
        let value = metadata::read_value(&mut c, ty).map_err(ctx)?;
        if metadata.contains_key(&key) {
            return Err(format!("metadata key {key:?} appears twice"));
        }
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::U32(a)) if a.is_power_of_two() => *a as usize,
        Some(MetaValue::U32(a)) => return Err(format!("general.alignment {a} is not a power of two")),
        Some(v) => return Err(format!("general.alignment is {}, expected u32", describe_value(v))),
    };

    let mut raw = Vec::new();
    for i in 0..tensor_count {
        let at = c.pos();
        let name = c.string().map_err(|e| format!("tensor info {i} of {tensor_count} (offset {at}): name: {e}"))?;
        let info = read_tensor_info(&mut c).map_err(|e| format!("tensor {name:?}: {e}"))?;
        raw.push((name, info));
    }

    let data_offset = c.pos().checked_next_multiple_of(alignment).ok_or("data section offset overflows")?;
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(raw.len());
    let mut names = std::collections::BTreeSet::new();
    for (name, (dims, ggml_type, offset)) in raw {
        if !names.insert(name.clone()) {
            return Err(format!("tensor {name:?} appears twice"));
        }
        let info = place_tensor(name, dims, ggml_type, offset, data_offset, alignment, file.len())?;
        tensors.push(info);
    }

    let mut ranges: Vec<(&str, &Range<usize>)> = tensors.iter().map(|t| (t.name.as_str(), &t.range)).collect();
    ranges.sort_by_key(|(_, r)| (r.start, r.end));
    for pair in ranges.windows(2) {
        let ((a, ra), (b, rb)) = (pair[0], pair[1]);
        if rb.start < ra.end && !ra.is_empty() && !rb.is_empty() {
            return Err(format!("tensors {a:?} and {b:?} overlap"));
        }
    }
    Ok(Parsed { version, alignment, data_offset, metadata, tensors })
}

/// Refuses a count whose entries could not fit in the rest of the file, so
/// no loop or allocation is sized by a corrupt number.
fn check_count(count: u64, min_bytes_each: u64, what: &str, c: &Cursor<'_>) -> std::result::Result<(), String> {
    let most = c.remaining() as u64 / min_bytes_each;
    if count > most {
        return Err(format!(
            "{count} {what} cannot fit in the {} bytes after the header (at most {most})",
            c.remaining()
        ));
    }
    Ok(())
}

/// Reads `n_dims, dims, ggml_type, offset` (the name is already read).
fn read_tensor_info(c: &mut Cursor<'_>) -> std::result::Result<(Vec<usize>, GgmlType, u64), String> {
    let n_dims = c.u32()?;
    if n_dims as usize > MAX_DIMS {
        return Err(format!("{n_dims} dimensions, ggml allows at most {MAX_DIMS}"));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        let d = c.u64()?;
        // ggml keeps dims as int64.
        let d = usize::try_from(d)
            .ok()
            .filter(|_| d <= i64::MAX as u64)
            .ok_or_else(|| format!("dimension {d} is too large"))?;
        dims.push(d);
    }
    let at = c.pos();
    let id = c.u32()?;
    let ggml_type = GgmlType::from_id(id).ok_or_else(|| format!("unknown ggml type {id} at offset {at}"))?;
    let offset = c.u64()?;
    Ok((dims, ggml_type, offset))
}

/// Sizes a tensor from its dims and type and checks where its bytes are.
fn place_tensor(
    name: String,
    dims: Vec<usize>,
    ggml_type: GgmlType,
    offset: u64,
    data_offset: usize,
    alignment: usize,
    file_len: usize,
) -> std::result::Result<TensorInfo, String> {
    let err = |msg: String| format!("tensor {name:?}: {msg}");
    let n_elements = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| err(format!("dims {dims:?} overflow")))?;
    let row = dims.first().copied().unwrap_or(1);
    let block = ggml_type.block_size();
    if !row.is_multiple_of(block) {
        return Err(err(format!("row length {row} (dims[0]) is not a whole number of {ggml_type} blocks of {block}")));
    }
    let n_bytes = ggml_type.bytes_for(n_elements).ok_or_else(|| err(format!("{ggml_type} {dims:?} is too large")))?;
    if !offset.is_multiple_of(alignment as u64) {
        return Err(err(format!("data offset {offset} is not a multiple of the alignment {alignment}")));
    }
    let start = (data_offset as u64).checked_add(offset);
    let end = start.and_then(|s| s.checked_add(n_bytes as u64));
    let (Some(start), Some(end)) = (start, end) else {
        return Err(err(format!("data offset {offset} overflows")));
    };
    if end > file_len as u64 {
        return Err(err(format!(
            "{n_bytes} bytes of {ggml_type} data at file offset {start} run past the end of the file ({file_len} bytes)"
        )));
    }
    Ok(TensorInfo {
        shape: dims.iter().rev().copied().collect(),
        dims,
        name,
        ggml_type,
        n_elements,
        offset,
        range: start as usize..end as usize,
    })
}
