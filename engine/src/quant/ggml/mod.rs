//! llama.cpp's block formats (Q4_0 .. Q8_0 and the k-quants Q2_K .. Q6_K),
//! kept as a GGUF file stores them: a [rows, cols] matrix is `rows` rows of
//! `cols / block_size` blocks of `type_size` bytes each, row after row, so a
//! weight loaded from a GGUF file takes exactly its bytes in the file (and
//! may borrow them from the file's memory map).
//!
//! - [`types`]: every ggml type with its block geometry;
//! - [`blocks`]: each block format's layout and dequantization, bit-exact
//!   with the `gguf` package.
//!
//! GGUF's MXFP4 is not among them: its blocks are the OCP format of
//! [`super::Mxfp4`] with the nibbles in another order, and load as that.

pub mod blocks;
pub mod types;

pub use blocks::{dequantize, dequantize_into};
pub use types::GgmlType;

use super::{QuantMatrix, check_row};
use crate::bytes::SharedBytes;
use crate::error::{Error, Result};

const OP: &str = "ggml";

/// The block formats a matrix can stay packed in.
pub const PACKED_TYPES: [GgmlType; 10] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

impl GgmlType {
    /// Whether a matrix of this type stays packed ([`GgmlBlocks`]).
    pub fn is_packed(self) -> bool {
        PACKED_TYPES.contains(&self)
    }
}

/// A [rows, cols] matrix of ggml blocks (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct GgmlBlocks {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: SharedBytes,
}

impl GgmlBlocks {
    /// Errors: a type that is not a block format of [`PACKED_TYPES`], an
    /// empty shape, `cols` not a whole number of blocks, or `data` not
    /// exactly `rows` rows of blocks.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: SharedBytes) -> Result<Self> {
        if !ty.is_packed() {
            return Err(Error::op(OP, format!("{ty} is not a block format kept packed")));
        }
        super::check_shape(OP, rows, cols, ty.block_size())?;
        let row_bytes = cols / ty.block_size() * ty.type_size();
        if rows.checked_mul(row_bytes) != Some(data.len()) {
            return Err(Error::op(
                OP,
                format!("{} bytes are not {rows} rows of {row_bytes} bytes of {ty} blocks", data.len()),
            ));
        }
        Ok(GgmlBlocks { ty, rows, cols, data })
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Bytes of one row of blocks.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }

    /// Every row's blocks, row after row.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Row `r`'s blocks.
    pub fn row(&self, r: usize) -> &[u8] {
        let n = self.row_bytes();
        &self.data[r * n..(r + 1) * n]
    }
}

impl QuantMatrix for GgmlBlocks {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn storage_bytes(&self) -> usize {
        self.data.len()
    }

    fn dequantize_row_into(&self, row: usize, out: &mut [f32]) -> Result<()> {
        check_row(OP, row, self.rows, out.len(), self.cols)?;
        dequantize_into(self.ty, self.row(row), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_dequantize_like_the_whole_tensor() {
        let (rows, cols) = (3, 512);
        for ty in PACKED_TYPES {
            let n = rows * cols / ty.block_size() * ty.type_size();
            // any bytes are valid blocks except non-finite f16 scales: keep
            // every byte small so every f16 field is a small normal number
            let data: Vec<u8> = (0..n).map(|i| (i * 7 % 61) as u8).collect();
            let whole = dequantize(ty, &data, rows * cols).unwrap();
            let m = GgmlBlocks::new(ty, rows, cols, data.into()).unwrap();
            assert_eq!(m.storage_bytes(), n);
            let mut row = vec![0f32; cols];
            for r in 0..rows {
                m.dequantize_row_into(r, &mut row).unwrap();
                assert_eq!(row, whole[r * cols..(r + 1) * cols], "{ty} row {r}");
            }
            assert!(m.dequantize_row_into(rows, &mut row).is_err());
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(GgmlBlocks::new(GgmlType::F16, 1, 32, vec![0; 64].into()).is_err());
        assert!(GgmlBlocks::new(GgmlType::Q4_0, 1, 33, vec![0; 18].into()).is_err());
        assert!(GgmlBlocks::new(GgmlType::Q4_0, 2, 32, vec![0; 18].into()).is_err());
        assert!(GgmlBlocks::new(GgmlType::Q4_0, 0, 32, SharedBytes::from(vec![])).is_err());
    }
}
