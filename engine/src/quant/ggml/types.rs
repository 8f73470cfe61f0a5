//! The ggml tensor types a GGUF file may name, with their block geometry.
//!
//! Numbers, names and sizes are those of `ggml.h` / `gguf.constants` (the
//! `GGMLQuantizationType` enum and `GGML_QUANT_SIZES`). Ids 4, 5 (Q4_2, Q4_3),
//! 31-33 and 36-38 (removed repacked layouts) are no longer valid and read as
//! unknown. Knowing a type means we can size and bound-check its tensors;
//! [`super::dequantize`] covers a subset (see [`GgmlType::can_dequantize`]).

/// A ggml element or block type.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
}

/// QK_K: elements per super-block of the k-quants.
const QK_K: usize = 256;

impl GgmlType {
    /// (type, id in the file, name, elements per block, bytes per block)
    const TABLE: [(GgmlType, u32, &'static str, usize, usize); 34] = [
        (GgmlType::F32, 0, "F32", 1, 4),
        (GgmlType::F16, 1, "F16", 1, 2),
        (GgmlType::Q4_0, 2, "Q4_0", 32, 2 + 16),
        (GgmlType::Q4_1, 3, "Q4_1", 32, 2 + 2 + 16),
        (GgmlType::Q5_0, 6, "Q5_0", 32, 2 + 4 + 16),
        (GgmlType::Q5_1, 7, "Q5_1", 32, 2 + 2 + 4 + 16),
        (GgmlType::Q8_0, 8, "Q8_0", 32, 2 + 32),
        (GgmlType::Q8_1, 9, "Q8_1", 32, 4 + 4 + 32),
        (GgmlType::Q2_K, 10, "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
        (GgmlType::Q3_K, 11, "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
        (GgmlType::Q4_K, 12, "Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12),
        (GgmlType::Q5_K, 13, "Q5_K", QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12),
        (GgmlType::Q6_K, 14, "Q6_K", QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16),
        (GgmlType::Q8_K, 15, "Q8_K", QK_K, 4 + QK_K + QK_K / 8),
        (GgmlType::IQ2_XXS, 16, "IQ2_XXS", QK_K, 2 + QK_K / 4),
        (GgmlType::IQ2_XS, 17, "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32),
        (GgmlType::IQ3_XXS, 18, "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8),
        (GgmlType::IQ1_S, 19, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16),
        (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 2 + 16),
        (GgmlType::IQ3_S, 21, "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
        (GgmlType::IQ2_S, 22, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16),
        (GgmlType::IQ4_XS, 23, "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
        (GgmlType::I8, 24, "I8", 1, 1),
        (GgmlType::I16, 25, "I16", 1, 2),
        (GgmlType::I32, 26, "I32", 1, 4),
        (GgmlType::I64, 27, "I64", 1, 8),
        (GgmlType::F64, 28, "F64", 1, 8),
        (GgmlType::IQ1_M, 29, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
        (GgmlType::BF16, 30, "BF16", 1, 2),
        (GgmlType::TQ1_0, 34, "TQ1_0", QK_K, 2 + 4 * 13),
        (GgmlType::TQ2_0, 35, "TQ2_0", QK_K, 2 + 64),
        (GgmlType::MXFP4, 39, "MXFP4", 32, 1 + 16),
        (GgmlType::NVFP4, 40, "NVFP4", 64, 4 + 32),
        (GgmlType::Q1_0, 41, "Q1_0", 128, 2 + 16),
    ];

    fn row(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        Self::TABLE.iter().find(|r| r.0 == self).expect("every variant is in TABLE")
    }

    /// The type with this id, or `None` for an unknown (or removed) id.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::TABLE.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    /// The id stored in a GGUF tensor info.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// The name ggml and the `gguf` package use, e.g. `"Q4_K"`.
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block (1 for plain element types).
    pub fn block_size(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.row().4
    }

    /// Whether [`super::dequantize`] handles this type.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | MXFP4)
    }

    /// Bytes taken by `n_elements` of this type, or `None` when `n_elements`
    /// is not a whole number of blocks or the size overflows.
    pub fn bytes_for(self, n_elements: usize) -> Option<usize> {
        if !n_elements.is_multiple_of(self.block_size()) {
            return None;
        }
        (n_elements / self.block_size()).checked_mul(self.type_size())
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
