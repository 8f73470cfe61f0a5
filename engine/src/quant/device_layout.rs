//! How a quantized matrix lies in device memory, shared by the GPU backends:
//! the packed codes and the scales of a [`QuantizedMatrix`] in two buffers,
//! which the kernels (`shaders/quant/matmul.wgsl`, `kernels/cu/quant.cuh`)
//! decode in registers: no f32 copy of the weight exists on the device.
//!
//! Layout, per weight row r of a [N, K] matrix (row-major, as stored):
//!
//! - **codes**: the row's packed bytes exactly as the format stores them
//!   (4-bit: element 2j in the low nibble of byte j; 8-bit: one byte per
//!   element), padded to a whole number of `align_words` u32 words (1 for
//!   wgpu; 4 for CUDA, whose kernels load 16 bytes at a time); row r starts
//!   at word `r * row_words`. Read as little-endian words, element i of a
//!   4-bit row is bits `4 (i % 8)` of word `i / 8`, of an 8-bit row bits
//!   `8 (i % 4)` of word `i / 4`.
//! - **scales**: `spr` scales per row, element i using scale `i / group`;
//!   row r starts at word `r * srow_words`. NVFP4 (E4M3) and MXFP4 (E8M0)
//!   scale bytes stay raw, four per word; FP8, INT8 and INT4 scales are f32
//!   words. INT4 with zero points appends the row's i8 zero points, four per
//!   word, after its scales. FP8 per-tensor and per-channel scales become one
//!   scale per row (group = K); FP8 2-D block scales are repeated for every
//!   row of their block row (group = the block's columns), so every format
//!   splits by weight rows alike.
//! - NVFP4's tensor scale (`weight_scale_2` or `weight_global_scale`) is
//!   `tensor_scale`, with the convention in [`DeviceFormat`].
//! - **GGUF block formats** (`Q4_0` .. `Q6_K`) keep their scales inside
//!   their blocks: codes hold each row's blocks byte for byte as the file
//!   stores them (see `quant::ggml::blocks` for every layout), padded like
//!   any row; block b of a row starts at byte `b * type_size` of the row, so
//!   a block may start inside a word. The scales buffer is one zero word
//!   (`srow_words` = 0), `group` the block size, `spr` the blocks per row.
//!
//! Decoding is operation for operation the CPU reference's
//! (`dequantize_row_into`): E2M1 x (E4M3 x s2), E2M1 x (E4M3 / g), E2M1 x
//! 2^(e-127), E4M3 x s, i8 x s, (q - zp) x s.

use super::{Fp8Scaling, GgmlType, Nvfp4Convention, QuantizedMatrix};

/// The decoder a kernel uses: `Q_FMT` in shaders/quant/matmul.wgsl, `QFMT_*`
/// in kernels/cu/quant.cuh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DeviceFormat {
    Nvfp4ModelOpt = 0,
    Nvfp4Ct = 1,
    Mxfp4 = 2,
    Fp8 = 3,
    Int8 = 4,
    Int4 = 5,
    Q4_0 = 6,
    Q4_1 = 7,
    Q5_0 = 8,
    Q5_1 = 9,
    Q8_0 = 10,
    Q2K = 11,
    Q3K = 12,
    Q4K = 13,
    Q5K = 14,
    Q6K = 15,
}

impl DeviceFormat {
    /// The decoder of a GGUF block format, if `ty` is one kept packed.
    /// Whether this is a GGUF block format (its scales inside its blocks).
    pub fn is_ggml(self) -> bool {
        match self {
            DeviceFormat::Nvfp4ModelOpt
            | DeviceFormat::Nvfp4Ct
            | DeviceFormat::Mxfp4
            | DeviceFormat::Fp8
            | DeviceFormat::Int8
            | DeviceFormat::Int4 => false,
            DeviceFormat::Q4_0
            | DeviceFormat::Q4_1
            | DeviceFormat::Q5_0
            | DeviceFormat::Q5_1
            | DeviceFormat::Q8_0
            | DeviceFormat::Q2K
            | DeviceFormat::Q3K
            | DeviceFormat::Q4K
            | DeviceFormat::Q5K
            | DeviceFormat::Q6K => true,
        }
    }

    pub fn of_ggml(ty: GgmlType) -> Option<Self> {
        Some(match ty {
            GgmlType::Q4_0 => DeviceFormat::Q4_0,
            GgmlType::Q4_1 => DeviceFormat::Q4_1,
            GgmlType::Q5_0 => DeviceFormat::Q5_0,
            GgmlType::Q5_1 => DeviceFormat::Q5_1,
            GgmlType::Q8_0 => DeviceFormat::Q8_0,
            GgmlType::Q2_K => DeviceFormat::Q2K,
            GgmlType::Q3_K => DeviceFormat::Q3K,
            GgmlType::Q4_K => DeviceFormat::Q4K,
            GgmlType::Q5_K => DeviceFormat::Q5K,
            GgmlType::Q6_K => DeviceFormat::Q6K,
            _ => return None,
        })
    }
}

/// How a quantized weight lies in its two buffers (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct DeviceLayout {
    pub fmt: DeviceFormat,
    /// Code words per weight row.
    pub row_words: usize,
    /// Scale (and zero-point) words per weight row.
    pub srow_words: usize,
    /// Elements per scale.
    pub group: usize,
    /// Scales per row.
    pub spr: usize,
    pub tensor_scale: f32,
    pub has_zp: bool,
}

/// The host bytes of the two buffers, and how they are laid out.
#[derive(Clone, Debug)]
pub struct DevicePacked {
    pub codes: Vec<u8>,
    pub scales: Vec<u8>,
    pub layout: DeviceLayout,
}

/// Rows of `row_bytes`-byte chunks of `data`, each padded to whole words.
fn padded_rows<'a>(rows: impl Iterator<Item = &'a [u8]>, row_words: usize, out: &mut Vec<u8>) {
    for row in rows {
        let start = out.len();
        out.extend_from_slice(row);
        out.resize(start + row_words * 4, 0);
    }
}

/// Words for `bytes` bytes of codes, rounded up to a multiple of `align_words`.
fn code_words(bytes: usize, align_words: usize) -> usize {
    bytes.div_ceil(4).next_multiple_of(align_words.max(1))
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// The host bytes of the codes and scales buffers, and their layout.
pub fn pack(m: &QuantizedMatrix, align_words: usize) -> DevicePacked {
    let (n, k) = (m.rows(), m.cols());
    let (mut codes, mut scales) = (Vec::new(), Vec::new());
    let layout = match m {
        QuantizedMatrix::Nvfp4(q) => {
            let fmt = match q.convention() {
                Nvfp4Convention::ModelOpt => DeviceFormat::Nvfp4ModelOpt,
                Nvfp4Convention::CompressedTensors => DeviceFormat::Nvfp4Ct,
            };
            byte_scaled(q.packed(), q.scales(), n, k, 16, fmt, q.tensor_scale(), align_words, &mut codes, &mut scales)
        }
        QuantizedMatrix::Mxfp4(q) => byte_scaled(
            q.packed(),
            q.scales(),
            n,
            k,
            32,
            DeviceFormat::Mxfp4,
            1.0,
            align_words,
            &mut codes,
            &mut scales,
        ),
        QuantizedMatrix::Fp8(q) => {
            let row_words = code_words(k, align_words);
            padded_rows(q.data().chunks_exact(k), row_words, &mut codes);
            let (group, spr) = match q.scaling() {
                Fp8Scaling::PerTensor | Fp8Scaling::PerChannel => (k, 1),
                Fp8Scaling::Block { cols, .. } => (cols, k.div_ceil(cols)),
            };
            for r in 0..n {
                match q.scaling() {
                    Fp8Scaling::PerTensor => scales.extend_from_slice(f32_bytes(&q.scales()[..1])),
                    Fp8Scaling::PerChannel => scales.extend_from_slice(f32_bytes(&q.scales()[r..r + 1])),
                    Fp8Scaling::Block { rows, .. } => {
                        scales.extend_from_slice(f32_bytes(&q.scales()[(r / rows) * spr..(r / rows + 1) * spr]))
                    }
                }
            }
            DeviceLayout {
                fmt: DeviceFormat::Fp8,
                row_words,
                srow_words: spr,
                group,
                spr,
                tensor_scale: 1.0,
                has_zp: false,
            }
        }
        QuantizedMatrix::Int8(q) => {
            let row_words = code_words(k, align_words);
            padded_rows(bytemuck::cast_slice::<i8, u8>(q.data()).chunks_exact(k), row_words, &mut codes);
            scales.extend_from_slice(f32_bytes(q.scales()));
            DeviceLayout {
                fmt: DeviceFormat::Int8,
                row_words,
                srow_words: 1,
                group: k,
                spr: 1,
                tensor_scale: 1.0,
                has_zp: false,
            }
        }
        QuantizedMatrix::Int4(q) => {
            let row_words = code_words(k / 2, align_words);
            padded_rows(q.packed().chunks_exact(k / 2), row_words, &mut codes);
            let (group, spr) = (q.group(), k / q.group());
            let zp_words = if q.is_symmetric() { 0 } else { spr.div_ceil(4) };
            for r in 0..n {
                scales.extend_from_slice(f32_bytes(&q.scales()[r * spr..(r + 1) * spr]));
                if let Some(z) = q.zero_points() {
                    padded_rows(
                        std::iter::once(bytemuck::cast_slice::<i8, u8>(&z[r * spr..(r + 1) * spr])),
                        zp_words,
                        &mut scales,
                    );
                }
            }
            DeviceLayout {
                fmt: DeviceFormat::Int4,
                row_words,
                srow_words: spr + zp_words,
                group,
                spr,
                tensor_scale: 1.0,
                has_zp: !q.is_symmetric(),
            }
        }
        QuantizedMatrix::Ggml(q) => {
            let ty = q.ty();
            let row_words = code_words(q.row_bytes(), align_words);
            padded_rows(q.data().chunks_exact(q.row_bytes()), row_words, &mut codes);
            scales.extend_from_slice(&[0; 4]);
            DeviceLayout {
                fmt: DeviceFormat::of_ggml(ty).expect("a GgmlBlocks matrix holds a packed type"),
                row_words,
                srow_words: 0,
                group: ty.block_size(),
                spr: k / ty.block_size(),
                tensor_scale: 1.0,
                has_zp: false,
            }
        }
    };
    DevicePacked { codes, scales, layout }
}

/// FP4 codes with one scale byte per `group` (NVFP4, MXFP4).
#[allow(clippy::too_many_arguments)]
fn byte_scaled(
    packed: &[u8],
    scale_bytes: &[u8],
    n: usize,
    k: usize,
    group: usize,
    fmt: DeviceFormat,
    tensor_scale: f32,
    align_words: usize,
    codes: &mut Vec<u8>,
    scales: &mut Vec<u8>,
) -> DeviceLayout {
    let row_words = code_words(k / 2, align_words);
    padded_rows(packed.chunks_exact(k / 2), row_words, codes);
    let spr = k / group;
    let srow_words = spr.div_ceil(4);
    padded_rows(scale_bytes.chunks_exact(spr).take(n), srow_words, scales);
    DeviceLayout { fmt, row_words, srow_words, group, spr, tensor_scale, has_zp: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::fp8;

    /// Element `i` of weight row `r`, decoded from the two buffers exactly as
    /// the module doc (and the kernels) read them.
    fn decode(p: &DevicePacked, r: usize, i: usize) -> f32 {
        let l = &p.layout;
        let word = |b: &[u8], w: usize| u32::from_le_bytes(b[4 * w..4 * w + 4].try_into().unwrap());
        let (crow, srow, g) = (r * l.row_words, r * l.srow_words, i / l.group);
        let scale_byte = |g: usize| (word(&p.scales, srow + g / 4) >> (8 * (g % 4))) & 0xff;
        let scale_f32 = |g: usize| f32::from_bits(word(&p.scales, srow + g));
        let nibble = || (word(&p.codes, crow + i / 8) >> (4 * (i % 8))) & 0xf;
        let byte = || (word(&p.codes, crow + i / 4) >> (8 * (i % 4))) & 0xff;
        let e2m1 = || crate::quant::e2m1::decode(nibble() as u8);
        match l.fmt {
            DeviceFormat::Nvfp4ModelOpt => e2m1() * (fp8::decode(scale_byte(g) as u8) * l.tensor_scale),
            DeviceFormat::Nvfp4Ct => e2m1() * (fp8::decode(scale_byte(g) as u8) / l.tensor_scale),
            DeviceFormat::Mxfp4 => e2m1() * 2f32.powi(scale_byte(g) as i32 - 127),
            DeviceFormat::Fp8 => fp8::decode(byte() as u8) * scale_f32(g),
            DeviceFormat::Int8 => byte() as u8 as i8 as f32 * scale_f32(g),
            DeviceFormat::Int4 => {
                let zp_byte = || (word(&p.scales, srow + l.spr + g / 4) >> (8 * (g % 4))) & 0xff;
                let zp = if l.has_zp { zp_byte() as u8 as i8 as f32 } else { 0.0 };
                (nibble() as f32 - 8.0 - zp) * scale_f32(g)
            }
            ggml => {
                let ty = crate::quant::ggml::PACKED_TYPES
                    .into_iter()
                    .find(|&t| DeviceFormat::of_ggml(t) == Some(ggml))
                    .unwrap();
                // the block holding element i, from its bytes in the row
                let at = 4 * crow + (i / l.group) * ty.type_size();
                let mut block = vec![0f32; l.group];
                crate::quant::ggml::dequantize_into(ty, &p.codes[at..at + ty.type_size()], &mut block).unwrap();
                block[i % l.group]
            }
        }
    }

    #[test]
    fn every_format_decodes_from_its_device_layout_as_the_reference() {
        let (rows, cols) = (6, 96);
        let w: Vec<f32> =
            (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013 * (1 + i % 7) as f32).collect();
        for fmt in [
            "nvfp4",
            "nvfp4:ct",
            "mxfp4",
            "mxfp4:ct",
            "fp8",
            "fp8:channel",
            "fp8:block4x32",
            "int8",
            "int4:g32",
            "int4:g32:asym",
        ] {
            let m = QuantizedMatrix::quantize(fmt.parse().unwrap(), &w, rows, cols).unwrap();
            for align in [1, 4] {
                let p = pack(&m, align);
                assert_eq!(p.layout.row_words % align, 0, "{fmt}");
                assert_eq!(p.codes.len(), rows * p.layout.row_words * 4, "{fmt}");
                assert_eq!(p.scales.len(), rows * p.layout.srow_words * 4, "{fmt}");
                check_decodes(&m, &p, fmt, align);
            }
        }
        // GGUF blocks: one odd-sized block per row, so rows need padding
        for ty in crate::quant::ggml::PACKED_TYPES {
            let cols = ty.block_size() * 3;
            let bytes: Vec<u8> =
                (0..rows * cols / ty.block_size() * ty.type_size()).map(|i| (i * 13 % 59) as u8).collect();
            let m = QuantizedMatrix::Ggml(crate::quant::GgmlBlocks::new(ty, rows, cols, bytes.into()).unwrap());
            for align in [1, 4] {
                let p = pack(&m, align);
                assert_eq!(p.codes.len(), rows * p.layout.row_words * 4, "{ty}");
                assert_eq!(p.layout.spr, 3, "{ty}");
                check_decodes(&m, &p, ty.name(), align);
            }
        }
    }

    /// Every element decoded from `p` as `m`'s reference dequantizes it.
    fn check_decodes(m: &QuantizedMatrix, p: &DevicePacked, fmt: &str, align: usize) {
        let (rows, cols) = (m.rows(), m.cols());
        let want = m.dequantize();
        for r in 0..rows {
            for i in 0..cols {
                let (got, want) = (decode(p, r, i), want[r * cols + i]);
                assert!(
                    got == want || (got - want).abs() <= 1e-7 * want.abs(),
                    "{fmt} align {align} [{r}, {i}]: {got} vs {want}"
                );
            }
        }
    }
}
