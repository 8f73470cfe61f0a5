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
    U32,
    /// A packed weight matrix (codes plus scales), made only by
    /// `Backend::upload_quantized`; it has no per-element size.
    Quant(QuantFormat),
}

impl DType {
    pub const ALL: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::U32];

    /// Bytes per element; 0 for quantized formats, which are not addressable per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Quant(_) => 0,
        }
    }

    pub fn name(self) -> String {
        match self {
            DType::F32 => "f32".into(),
            DType::F16 => "f16".into(),
            DType::BF16 => "bf16".into(),
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
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
