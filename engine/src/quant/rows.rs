//! Some rows of a quantized matrix, as a matrix of its own: what cutting a
//! projection into parts takes (MLA's query into its no-position and rotary
//! rows) without widening it. Every format here keeps a row's codes and
//! scales to that row, except FP8's 2-D blocks; those become blocks one row
//! high, each row keeping its block's scales. So the chosen rows decode
//! exactly as they did in the whole.

use super::{Fp8Scaling, Fp8Weight, GgmlBlocks, Int4, Int8, Mxfp4, Nvfp4, QuantFormat, QuantizedMatrix};
use crate::bytes::SharedBytes;
use crate::error::{Error, Result};

impl QuantizedMatrix {
    /// Rows `rows` of the matrix, in that order.
    pub fn select_rows(&self, rows: &[usize]) -> Result<QuantizedMatrix> {
        let (total, cols, n) = (self.rows(), self.cols(), rows.len());
        if let Some(r) = rows.iter().find(|&&r| r >= total) {
            return Err(Error::op("select_rows", format!("row {r} of a matrix of {total} rows")));
        }
        // each chosen row's `per_row` items of `data`
        fn pick<T: Copy>(data: &[T], per_row: usize, rows: impl Iterator<Item = usize>) -> Vec<T> {
            rows.flat_map(|r| &data[r * per_row..(r + 1) * per_row]).copied().collect()
        }
        let each = || rows.iter().copied();
        Ok(match self {
            QuantizedMatrix::Nvfp4(m) => QuantizedMatrix::Nvfp4(Nvfp4::from_parts(
                m.convention(),
                n,
                cols,
                pick(m.packed(), cols / 2, each()),
                pick(m.scales(), cols / Nvfp4::BLOCK, each()),
                m.tensor_scale(),
            )?),
            QuantizedMatrix::Mxfp4(m) => QuantizedMatrix::Mxfp4(Mxfp4::from_parts(
                n,
                cols,
                pick(m.packed(), cols / 2, each()),
                pick(m.scales(), cols / Mxfp4::BLOCK, each()),
            )?),
            QuantizedMatrix::Fp8(m) => {
                let data = pick(m.data(), cols, each());
                let (scaling, scales) = match m.scaling() {
                    Fp8Scaling::PerTensor => (Fp8Scaling::PerTensor, m.scales().to_vec()),
                    Fp8Scaling::PerChannel => (Fp8Scaling::PerChannel, pick(m.scales(), 1, each())),
                    Fp8Scaling::Block { rows: br, cols: bc } => {
                        let per_row = cols.div_ceil(bc);
                        (Fp8Scaling::Block { rows: 1, cols: bc }, pick(m.scales(), per_row, each().map(|r| r / br)))
                    }
                };
                QuantizedMatrix::Fp8(Fp8Weight::from_parts(scaling, n, cols, data, scales)?)
            }
            QuantizedMatrix::Int8(m) => QuantizedMatrix::Int8(Int8::from_parts(
                n,
                cols,
                pick(m.data(), cols, each()),
                pick(m.scales(), 1, each()),
            )?),
            QuantizedMatrix::Int4(m) => {
                let groups = cols / m.group();
                QuantizedMatrix::Int4(Int4::from_parts(
                    n,
                    cols,
                    m.group(),
                    pick(m.packed(), cols / 2, each()),
                    pick(m.scales(), groups, each()),
                    m.zero_points().map(|z| pick(z, groups, each())),
                )?)
            }
            QuantizedMatrix::Ggml(m) => {
                let data = pick(m.data(), m.row_bytes(), each());
                QuantizedMatrix::Ggml(GgmlBlocks::new(m.ty(), n, cols, SharedBytes::from(data))?)
            }
        })
    }
}

impl QuantFormat {
    /// The format of some rows of a matrix in this format ([`QuantizedMatrix::select_rows`]).
    pub fn of_selected_rows(self) -> QuantFormat {
        match self {
            QuantFormat::Fp8(Fp8Scaling::Block { cols, .. }) => QuantFormat::Fp8(Fp8Scaling::Block { rows: 1, cols }),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::GgmlType;

    /// Q8_0 blocks: an f16 scale, then 32 i8 codes.
    fn q8_0(rows: usize, cols: usize) -> GgmlBlocks {
        let data = (0..rows * cols / 32)
            .flat_map(|b| {
                let scale = half::f16::from_f32(0.01 * (1 + b % 5) as f32).to_le_bytes();
                scale.into_iter().chain((0..32).map(move |i| (i * 37 + b) as u8))
            })
            .collect::<Vec<u8>>();
        GgmlBlocks::new(GgmlType::Q8_0, rows, cols, SharedBytes::from(data)).unwrap()
    }

    #[test]
    fn chosen_rows_decode_as_they_did_in_the_whole() {
        let (rows, cols) = (6, 256);
        let w: Vec<f32> =
            (0..rows * cols).map(|i| ((i * 7919 % 211) as f32 / 105.0 - 1.0) * (1 + i / cols) as f32).collect();
        let chosen = [4, 0, 5, 5, 2];
        let mut matrices: Vec<QuantizedMatrix> =
            ["nvfp4", "nvfp4:ct", "mxfp4", "fp8", "fp8:channel", "fp8:block4x64", "int8", "int4:g32:asym"]
                .iter()
                .map(|f| QuantizedMatrix::quantize(f.parse().unwrap(), &w, rows, cols).unwrap())
                .collect();
        matrices.push(QuantizedMatrix::Ggml(q8_0(rows, cols)));
        for m in matrices {
            let part = m.select_rows(&chosen).unwrap();
            assert_eq!(part.format(), m.format().of_selected_rows(), "{:?}", m.format());
            assert_eq!(part.storage_bytes(), m.format().of_selected_rows().storage_bytes(chosen.len(), cols));
            let (whole, part) = (m.dequantize(), part.dequantize());
            for (i, &r) in chosen.iter().enumerate() {
                assert_eq!(part[i * cols..][..cols], whole[r * cols..][..cols], "{:?} row {r}", m.format());
            }
        }
        let m = QuantizedMatrix::quantize("int8".parse().unwrap(), &w, rows, cols).unwrap();
        assert!(m.select_rows(&[6]).is_err());
    }
}
