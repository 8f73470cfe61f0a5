//! GGUF metadata values: the 13 value types, scalars and (nested) arrays.
//!
//! On disk a value is its payload alone (the u32 type id precedes it in the
//! key/value entry): fixed-size little-endian scalars, a bool as one byte (0 or
//! 1), a string as `u64 length + UTF-8 bytes` (no terminator), an array as
//! `u32 element type + u64 count + elements`, where an element that is itself an
//! array carries its own element type and count.

use super::Cursor;

/// Arrays may hold arrays; deeper nesting than this is refused so a crafted
/// file cannot exhaust the stack (real files nest at most two levels).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// The type id of a metadata value, as numbered by `GGUFValueType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl MetaType {
    /// In id order: id `i` is `ALL[i]`.
    const ALL: [MetaType; 13] = [
        MetaType::U8,
        MetaType::I8,
        MetaType::U16,
        MetaType::I16,
        MetaType::U32,
        MetaType::I32,
        MetaType::F32,
        MetaType::Bool,
        MetaType::String,
        MetaType::Array,
        MetaType::U64,
        MetaType::I64,
        MetaType::F64,
    ];

    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.get(id as usize).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            MetaType::U8 => "u8",
            MetaType::I8 => "i8",
            MetaType::U16 => "u16",
            MetaType::I16 => "i16",
            MetaType::U32 => "u32",
            MetaType::I32 => "i32",
            MetaType::F32 => "f32",
            MetaType::Bool => "bool",
            MetaType::String => "string",
            MetaType::Array => "array",
            MetaType::U64 => "u64",
            MetaType::I64 => "i64",
            MetaType::F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type takes on disk (a string: its
    /// length; an array: its element type and count). Bounds counts before
    /// anything is allocated.
    fn min_size(self) -> usize {
        match self {
            MetaType::U8 | MetaType::I8 | MetaType::Bool => 1,
            MetaType::U16 | MetaType::I16 => 2,
            MetaType::U32 | MetaType::I32 | MetaType::F32 => 4,
            MetaType::U64 | MetaType::I64 | MetaType::F64 | MetaType::String => 8,
            MetaType::Array => 12,
        }
    }
}

impl std::fmt::Display for MetaType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(MetaArray),
}

/// An array value: every element has the same type, kept as a typed vector
/// (a token list is a `Vec<String>`, scores a `Vec<f32>`).
#[derive(Clone, Debug, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    /// Each inner array has its own element type and length.
    Array(Vec<MetaArray>),
}

impl MetaValue {
    pub fn meta_type(&self) -> MetaType {
        match self {
            MetaValue::U8(_) => MetaType::U8,
            MetaValue::I8(_) => MetaType::I8,
            MetaValue::U16(_) => MetaType::U16,
            MetaValue::I16(_) => MetaType::I16,
            MetaValue::U32(_) => MetaType::U32,
            MetaValue::I32(_) => MetaType::I32,
            MetaValue::U64(_) => MetaType::U64,
            MetaValue::I64(_) => MetaType::I64,
            MetaValue::F32(_) => MetaType::F32,
            MetaValue::F64(_) => MetaType::F64,
            MetaValue::Bool(_) => MetaType::Bool,
            MetaValue::String(_) => MetaType::String,
            MetaValue::Array(_) => MetaType::Array,
        }
    }

    /// Any integer value, widened; `None` for non-integers.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// An f32 or f64 value as f64 (exact); `None` for other types.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl MetaArray {
    pub fn elem_type(&self) -> MetaType {
        match self {
            MetaArray::U8(_) => MetaType::U8,
            MetaArray::I8(_) => MetaType::I8,
            MetaArray::U16(_) => MetaType::U16,
            MetaArray::I16(_) => MetaType::I16,
            MetaArray::U32(_) => MetaType::U32,
            MetaArray::I32(_) => MetaType::I32,
            MetaArray::U64(_) => MetaType::U64,
            MetaArray::I64(_) => MetaType::I64,
            MetaArray::F32(_) => MetaType::F32,
            MetaArray::F64(_) => MetaType::F64,
            MetaArray::Bool(_) => MetaType::Bool,
            MetaArray::String(_) => MetaType::String,
            MetaArray::Array(_) => MetaType::Array,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::F64(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
            MetaArray::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// e.g. `array[string; 5]`, `array[array; 2]`.
    pub fn describe(&self) -> String {
        format!("array[{}; {}]", self.elem_type(), self.len())
    }
}

/// Reads one value of type `ty` (its payload; the type id is already read).
pub(super) fn read_value(c: &mut Cursor<'_>, ty: MetaType) -> Result<MetaValue, String> {
    Ok(match ty {
        MetaType::U8 => MetaValue::U8(c.u8()?),
        MetaType::I8 => MetaValue::I8(c.u8()? as i8),
        MetaType::U16 => MetaValue::U16(u16::from_le_bytes(c.array()?)),
        MetaType::I16 => MetaValue::I16(i16::from_le_bytes(c.array()?)),
        MetaType::U32 => MetaValue::U32(c.u32()?),
        MetaType::I32 => MetaValue::I32(i32::from_le_bytes(c.array()?)),
        MetaType::U64 => MetaValue::U64(c.u64()?),
        MetaType::I64 => MetaValue::I64(i64::from_le_bytes(c.array()?)),
        MetaType::F32 => MetaValue::F32(f32::from_le_bytes(c.array()?)),
        MetaType::F64 => MetaValue::F64(f64::from_le_bytes(c.array()?)),
        MetaType::Bool => MetaValue::Bool(read_bool(c)?),
        MetaType::String => MetaValue::String(c.string()?),
        MetaType::Array => MetaValue::Array(read_array(c, 1)?),
    })
}

fn read_bool(c: &mut Cursor<'_>) -> Result<bool, String> {
    let at = c.pos();
    match c.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(format!("bool at offset {at} is {b}, neither 0 nor 1")),
    }
}

/// Reads `u32 element type, u64 count, elements`; `depth` is 1 for a
/// top-level array.
fn read_array(c: &mut Cursor<'_>, depth: usize) -> Result<MetaArray, String> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"));
    }
    let at = c.pos();
    let id = c.u32()?;
    let elem = MetaType::from_id(id).ok_or_else(|| format!("unknown array element type {id} at offset {at}"))?;
    let at = c.pos();
    let count = c.u64()?;
    // Refuse a count the rest of the file cannot hold before allocating for it.
    let min_bytes = count.checked_mul(elem.min_size() as u64);
    if min_bytes.is_none_or(|b| b > c.remaining() as u64) {
        return Err(format!(
            "array of {count} {elem} at offset {at} needs at least {} bytes but only {} remain in the file",
            min_bytes.map_or("2^64+".to_string(), |b| b.to_string()),
            c.remaining()
        ));
    }
    let n = count as usize; // <= remaining bytes, so it fits
    macro_rules! fixed {
        ($variant:ident, $t:ty) => {{
            let bytes = c.take(n * std::mem::size_of::<$t>())?;
            MetaArray::$variant(
                bytes
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|b| <$t>::from_le_bytes(b.try_into().expect("chunk of the type's size")))
                    .collect(),
            )
        }};
    }
    Ok(match elem {
        MetaType::U8 => MetaArray::U8(c.take(n)?.to_vec()),
        MetaType::I8 => MetaArray::I8(c.take(n)?.iter().map(|&b| b as i8).collect()),
        MetaType::U16 => fixed!(U16, u16),
        MetaType::I16 => fixed!(I16, i16),
        MetaType::U32 => fixed!(U32, u32),
        MetaType::I32 => fixed!(I32, i32),
        MetaType::U64 => fixed!(U64, u64),
        MetaType::I64 => fixed!(I64, i64),
        MetaType::F32 => fixed!(F32, f32),
        MetaType::F64 => fixed!(F64, f64),
        MetaType::Bool => MetaArray::Bool(read_each(c, n, read_bool)?),
        MetaType::String => MetaArray::String(read_each(c, n, |c| c.string())?),
        MetaType::Array => MetaArray::Array(read_each(c, n, |c| read_array(c, depth + 1))?),
    })
}

/// Reads `n` variable-size elements; an error names the element.
fn read_each<T>(
    c: &mut Cursor<'_>,
    n: usize,
    mut read: impl FnMut(&mut Cursor<'_>) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(read(c).map_err(|e| format!("element {i} of {n}: {e}"))?);
    }
    Ok(out)
}

/// A Rust type a metadata value can be read as, for [`super::GgufFile::get`].
/// Integers convert between widths when the value fits; floats widen but never
/// narrow; nothing converts between integers, floats, bools and strings.
pub trait FromMeta<'a>: Sized {
    /// What the caller asked for, for error messages (e.g. "u32").
    const EXPECTED: &'static str;
    fn from_meta(value: &'a MetaValue) -> Option<Self>;
}

macro_rules! from_meta_int {
    ($($t:ty),*) => {$(
        impl FromMeta<'_> for $t {
            const EXPECTED: &'static str = stringify!($t);
            fn from_meta(value: &MetaValue) -> Option<Self> {
                value.as_i128().and_then(|v| <$t>::try_from(v).ok())
            }
        }
    )*};
}
from_meta_int!(u8, i8, u16, i16, u32, i32, u64, i64, usize);

impl FromMeta<'_> for f32 {
    const EXPECTED: &'static str = "f32";
    fn from_meta(value: &MetaValue) -> Option<Self> {
        match *value {
            MetaValue::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl FromMeta<'_> for f64 {
    const EXPECTED: &'static str = "f64 (or f32)";
    fn from_meta(value: &MetaValue) -> Option<Self> {
        value.as_f64()
    }
}

impl FromMeta<'_> for bool {
    const EXPECTED: &'static str = "bool";
    fn from_meta(value: &MetaValue) -> Option<Self> {
        match *value {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }
}

impl<'a> FromMeta<'a> for &'a str {
    const EXPECTED: &'static str = "string";
    fn from_meta(value: &'a MetaValue) -> Option<Self> {
        value.as_str()
    }
}

impl<'a> FromMeta<'a> for &'a MetaArray {
    const EXPECTED: &'static str = "array";
    fn from_meta(value: &'a MetaValue) -> Option<Self> {
        value.as_array()
    }
}

macro_rules! from_meta_slice {
    ($($variant:ident: $t:ty, $name:literal;)*) => {$(
        impl<'a> FromMeta<'a> for &'a [$t] {
            const EXPECTED: &'static str = $name;
            fn from_meta(value: &'a MetaValue) -> Option<Self> {
                match value {
                    MetaValue::Array(MetaArray::$variant(v)) => Some(v),
                    _ => None,
                }
            }
        }
    )*};
}
from_meta_slice! {
    U8: u8, "u8 array";
    I8: i8, "i8 array";
    U16: u16, "u16 array";
    I16: i16, "i16 array";
    U32: u32, "u32 array";
    I32: i32, "i32 array";
    U64: u64, "u64 array";
    I64: i64, "i64 array";
    F32: f32, "f32 array";
    F64: f64, "f64 array";
    Bool: bool, "bool array";
    String: String, "string array";
}
