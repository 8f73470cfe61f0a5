//! Element types a tensor can hold.

use std::fmt;

use crate::quant::QuantFormat;

/// Element type of a tensor. Activations are f32; weights may be f32, f16,
/// bf16 or a quantized format; token ids, positions and block tables are u32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// float8_e4m3fn: a KV cache element (values as they are, saturated at
    /// ±448, as vLLM's fp8 cache with scale 1).
    F8E4M3,
    U32,
    /// A packed weight matrix (codes plus scales), made only by
    /// `Backend::upload_quantized`; it has no per-element size.
    Quant(QuantFormat),
}

impl DType {
    pub const ALL: [DType; 5] = [DType::F32, DType::F16, DType::BF16, DType::F8E4M3, DType::U32];
    /// What a KV cache may hold.
    pub const CACHE: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::F8E4M3];

    /// Bytes per element; 0 for quantized formats, which are not addressable per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F8E4M3 => 1,
            DType::Quant(_) => 0,
        }
    }

    pub fn name(self) -> String {
        match self {
            DType::F32 => "f32".into(),
            DType::F16 => "f16".into(),
            DType::BF16 => "bf16".into(),
            DType::F8E4M3 => "fp8".into(),
            DType::U32 => "u32".into(),
            DType::Quant(f) => f.to_string(),
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Quant(_))
    }

    /// A KV cache element type ([`DType::CACHE`]).
    pub fn is_cache(self) -> bool {
        DType::CACHE.contains(&self)
    }
}

impl std::str::FromStr for DType {
    type Err = String;

    /// A KV cache dtype by name: f32, f16, bf16, fp8.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "fp16" | "half" | "float16" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "fp8" | "f8" | "fp8_e4m3" | "f8e4m3" => Ok(DType::F8E4M3),
            other => Err(format!("unknown cache dtype {other:?}; expected f32, f16, bf16 or fp8")),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
