//! matmul: kernels/cu/matmul.cu, and cuBLAS for prefill with float weights.
//!
//! - m <= GEMV_MAX_M (decode): the GEMV kernels, which read each weight row
//!   once per GEMV_ROWS rows of x; quantized weights are decoded in registers.
//! - larger m with f32/f16/bf16 weights: one cuBLAS GEMM when libcublas is
//!   present (x rounded to the weight's dtype for f16/bf16, f32 accumulation),
//!   else the tiled kernel.
//! - larger m with quantized weights: the weight decoded into a temporary f32
//!   copy and one cuBLAS SGEMM, else the tiled kernel decoding as it loads.

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::cublas::{CudaBlas, result as blas};
use cudarc::driver::{DevicePtr, DeviceRepr};
use ferrum_engine::quant::device_layout::{DeviceFormat, DeviceLayout};
use ferrum_engine::{DType, Error, Result, Tensor};

use super::{BLOCK, Launcher, MAX_BLOCKS, by_dtype, u32_of};
use crate::buffer::{cuda_buffer, driver_err};
use crate::quant::cuda_quant_buffer;

/// `GEMV_WARPS` and `GEMV_ROWS` in matmul.cu; at most this many rows of x
/// take the GEMV kernel (it reads the weights ceil(m / GEMV_ROWS) times).
const GEMV_WARPS: u32 = 8;
const GEMV_ROWS: u32 = 4;
const GEMV_MAX_M: usize = 8;
/// `TILE` in matmul.cu.
const TILE: u32 = 64;

/// Mirrors `MatmulParams` in kernels/cu/matmul.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub has_bias: u32,
    pub vec: u32,
    pub _pad: u32,
}

/// Mirrors `QuantMatmulParams` in kernels/cu/quant.cuh.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct QuantMatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub has_bias: u32,
    pub vec: u32,
    pub row_words: u32,
    pub srow_words: u32,
    pub group: u32,
    pub spr: u32,
    pub has_zp: u32,
    pub tensor_scale: f32,
    pub _pad: u32,
}

/// Mirrors `RowsParams` in kernels/cu/matmul.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowsParams {
    pub n: u64,
    pub cols: u32,
    pub _pad: u32,
}

// SAFETY: plain #[repr(C)] structs of u32/u64/f32, laid out as their C twins.
unsafe impl DeviceRepr for MatmulParams {}
unsafe impl DeviceRepr for QuantMatmulParams {}
unsafe impl DeviceRepr for RowsParams {}

impl QuantMatmulParams {
    /// The params of x [m, k] times a weight [n, k] laid out as `lay`.
    pub fn new(lay: &DeviceLayout, m: usize, n: usize, k: usize, has_bias: bool) -> Result<Self> {
        // QuantW: 16-byte chunks (4 words) that end inside the row, rows
        // starting 16-byte aligned, and each code word inside one scale group
        let whole_words = |per_word: usize| {
            k.is_multiple_of(4 * per_word) && lay.row_words.is_multiple_of(4) && lay.group.is_multiple_of(per_word)
        };
        let vec = match lay.fmt {
            DeviceFormat::Nvfp4ModelOpt | DeviceFormat::Nvfp4Ct | DeviceFormat::Mxfp4 | DeviceFormat::Int4 => {
                whole_words(8)
            }
            DeviceFormat::Fp8 | DeviceFormat::Int8 => whole_words(4),
            // GgmlW: 32-element chunks, each inside one block (read byte by
            // byte, so no alignment is needed beyond x's float4 loads)
            f => {
                debug_assert!(f.is_ggml());
                k.is_multiple_of(32) && lay.group.is_multiple_of(32)
            }
        };
        Ok(QuantMatmulParams {
            m: u32_of(m, "m")?,
            n: u32_of(n, "n")?,
            k: u32_of(k, "k")?,
            has_bias: has_bias as u32,
            vec: vec as u32,
            row_words: u32_of(lay.row_words, "code words per row")?,
            srow_words: u32_of(lay.srow_words, "scale words per row")?,
            group: u32_of(lay.group, "scale group")?,
            spr: u32_of(lay.spr, "scales per row")?,
            has_zp: lay.has_zp as u32,
            tensor_scale: lay.tensor_scale,
            _pad: 0,
        })
    }
}

/// The kernel-name suffix of a quantized format (`QUANT_KERNELS` in
/// matmul.cu, `QUANT_GATHER` in gather_rows.cu).
pub(super) fn quant_suffix(fmt: DeviceFormat) -> &'static str {
    match fmt {
        DeviceFormat::Nvfp4ModelOpt => "nvfp4",
        DeviceFormat::Nvfp4Ct => "nvfp4_ct",
        DeviceFormat::Mxfp4 => "mxfp4",
        DeviceFormat::Fp8 => "fp8",
        DeviceFormat::Int8 => "int8",
        DeviceFormat::Int4 => "int4",
        DeviceFormat::Q4_0 => "q4_0",
        DeviceFormat::Q4_1 => "q4_1",
        DeviceFormat::Q5_0 => "q5_0",
        DeviceFormat::Q5_1 => "q5_1",
        DeviceFormat::Q8_0 => "q8_0",
        DeviceFormat::Q2K => "q2_k",
        DeviceFormat::Q3K => "q3_k",
        DeviceFormat::Q4K => "q4_k",
        DeviceFormat::Q5K => "q5_k",
        DeviceFormat::Q6K => "q6_k",
    }
}

/// The grids of the GEMV and tiled kernels for an [m, n] output.
fn gemv_grid(m: u32, n: u32) -> (u32, u32, u32) {
    (n.div_ceil(GEMV_WARPS), m.div_ceil(GEMV_ROWS), 1)
}

fn tiled_grid(m: u32, n: u32) -> (u32, u32, u32) {
    (n.div_ceil(TILE), m.div_ceil(TILE), 1)
}

pub(super) fn run(l: &Launcher, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
    let (x, w, bias) = (inputs[0], inputs[1], inputs.get(2));
    let (m, k, n) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    let xp = cuda_buffer(x)?.ptr();
    let bp = bias.map(|b| cuda_buffer(b).map(|b| b.ptr())).transpose()?;
    let o = cuda_buffer(out)?.ptr();
    if let DType::Quant(_) = w.dtype() {
        let q = cuda_quant_buffer(w)?;
        let p = QuantMatmulParams::new(&q.layout, m, n, k, bp.is_some())?;
        let suffix = quant_suffix(q.layout.fmt);
        let args = [xp, q.codes.ptr(), q.scales.ptr(), bp.unwrap_or(0), o];
        if m <= GEMV_MAX_M {
            return l.launch(&format!("matmul_gemv_{suffix}"), gemv_grid(p.m, p.n), 32 * GEMV_WARPS, &p, &args);
        }
        if let Some(cublas) = l.blas {
            // the weight decoded once into f32, then one SGEMM
            // SAFETY: written in full by matmul_dequant before the GEMM reads it.
            let wf = unsafe { l.stream.alloc::<f32>(n * k) }.map_err(driver_err("alloc"))?;
            let wf_ptr = {
                let (ptr, _sync) = wf.device_ptr(l.stream);
                ptr
            };
            let blocks = ((n * k) as u64).div_ceil(BLOCK as u64).min(MAX_BLOCKS) as u32;
            let decode = [q.codes.ptr(), q.scales.ptr(), wf_ptr];
            l.launch(&format!("matmul_dequant_{suffix}"), (blocks, 1, 1), BLOCK, &p, &decode)?;
            // wf's free is queued on the stream after the GEMM
            return gemm(l, cublas, DType::F32, (m, n, k), xp, wf_ptr, bp, o);
        }
        return l.launch(&format!("matmul_tiled_{suffix}"), tiled_grid(p.m, p.n), 256, &p, &args);
    }
    let wp = cuda_buffer(w)?.ptr();
    let elem = w.dtype().size_bytes();
    let p = MatmulParams {
        m: u32_of(m, "m")?,
        n: u32_of(n, "n")?,
        k: u32_of(k, "k")?,
        has_bias: bp.is_some() as u32,
        vec: ((k * elem) % 16 == 0 && k % 4 == 0) as u32,
        _pad: 0,
    };
    let args = [xp, wp, bp.unwrap_or(0), o];
    if m <= GEMV_MAX_M {
        let name = by_dtype(w.dtype(), "matmul_gemv_f32", "matmul_gemv_f16", "matmul_gemv_bf16")?;
        return l.launch(name, gemv_grid(p.m, p.n), 32 * GEMV_WARPS, &p, &args);
    }
    if let Some(cublas) = l.blas {
        return gemm(l, cublas, w.dtype(), (m, n, k), xp, wp, bp, o);
    }
    let name = by_dtype(w.dtype(), "matmul_tiled_f32", "matmul_tiled_f16", "matmul_tiled_bf16")?;
    l.launch(name, tiled_grid(p.m, p.n), 256, &p, &args)
}

/// out [m, n] = x [m, k] . w [n, k]^T (+ bias) with cuBLAS. Row-major out is
/// column-major out^T = w^T(op T) . x: cuBLAS's (m, n, k) are our (n, m, k).
#[allow(clippy::too_many_arguments)]
fn gemm(
    l: &Launcher,
    cublas: &CudaBlas,
    wdtype: DType,
    (m, n, k): (usize, usize, usize),
    x: u64,
    w: u64,
    bias: Option<u64>,
    out: u64,
) -> Result<()> {
    let dims = |v: usize, what| i32::try_from(v).map_err(|_| Error::Backend(format!("cuBLAS: {what} = {v} > i32")));
    let (mi, ni, ki) = (dims(m, "m")?, dims(n, "n")?, dims(k, "k")?);
    let (alpha, beta) = (1.0f32, 0.0f32);
    let handle = *cublas.handle();
    let status = match wdtype {
        // SAFETY: x, w and out are live device buffers of m*k, n*k and m*n
        // elements (the shape rule was checked), on the stream of `handle`.
        DType::F32 => unsafe {
            blas::sgemm(
                handle,
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                ni,
                mi,
                ki,
                &alpha,
                w as *const f32,
                ki,
                x as *const f32,
                ki,
                &beta,
                out as *mut f32,
                ni,
            )
        },
        DType::F16 | DType::BF16 => {
            let (convert, data_type) = if wdtype == DType::F16 {
                ("matmul_x_to_f16", cudaDataType::CUDA_R_16F)
            } else {
                ("matmul_x_to_bf16", cudaDataType::CUDA_R_16BF)
            };
            // SAFETY: written in full by the conversion below before cuBLAS reads it.
            let xh = unsafe { l.stream.alloc::<u16>(m * k) }.map_err(driver_err("alloc"))?;
            let xh_ptr = {
                let (ptr, _sync) = xh.device_ptr(l.stream);
                ptr
            };
            l.rows(convert, m * k, k, &[x, xh_ptr])?;
            // SAFETY: as above; xh holds m*k elements of `data_type`, and its
            // free is queued on the same stream after the GEMM.
            unsafe {
                blas::gemm_ex(
                    handle,
                    cublasOperation_t::CUBLAS_OP_T,
                    cublasOperation_t::CUBLAS_OP_N,
                    ni,
                    mi,
                    ki,
                    (&alpha as *const f32).cast(),
                    w as *const _,
                    data_type,
                    ki,
                    xh_ptr as *const _,
                    data_type,
                    ki,
                    (&beta as *const f32).cast(),
                    out as *mut _,
                    cudaDataType::CUDA_R_32F,
                    ni,
                    cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
        }
        other => return Err(Error::Backend(format!("cuBLAS: no GEMM for {other} weights"))),
    };
    status.map_err(|e| Error::Backend(format!("cuBLAS GEMM ({m} x {k}) . ({n} x {k})^T: {e:?}")))?;
    match bias {
        Some(b) => l.rows("matmul_add_bias", m * n, n, &[b, out]),
        None => Ok(()),
    }
}

impl Launcher<'_> {
    /// A grid-stride kernel of matmul.cu over `n` elements of rows of `cols`.
    fn rows(&self, name: &str, n: usize, cols: usize, ptrs: &[u64]) -> Result<()> {
        let blocks = (n as u64).div_ceil(BLOCK as u64).min(MAX_BLOCKS) as u32;
        let p = RowsParams { n: n as u64, cols: u32_of(cols, "cols")?, _pad: 0 };
        self.launch(name, (blocks, 1, 1), BLOCK, &p, ptrs)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::mem::size_of;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use ferrum_engine::quant::device_layout::pack;
    use ferrum_engine::quant::ggml::{PACKED_TYPES, blocks::f16_fields};
    use ferrum_engine::quant::{GgmlBlocks, GgmlType, QuantizedMatrix};

    use super::*;
    use crate::quant::ALIGN_WORDS;

    /// tests/host/quant_decode.cpp with kernels/cu/quant.cuh and
    /// quant_ggml.cuh pasted in, built with the host's C++ compiler (`$CXX`,
    /// else `c++`); None if there is none.
    fn host_decoder(dir: &Path) -> Option<PathBuf> {
        let harness = [("quant.cuh", ferrum_kernels::QUANT), ("quant_ggml.cuh", ferrum_kernels::QUANT_GGML)]
            .iter()
            .fold(include_str!("../../tests/host/quant_decode.cpp").to_string(), |src, (name, text)| {
                src.replacen(&format!("#include \"{name}\""), &text.replacen("#pragma once", "", 1), 1)
            });
        let src = dir.join("quant_decode.cpp");
        std::fs::write(&src, harness).unwrap();
        let exe = dir.join("quant_decode");
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let status = Command::new(&cxx)
            .args(["-std=c++17", "-O1", "-ffp-contract=off", "-fno-strict-aliasing", "-o"])
            .arg(&exe)
            .arg(&src)
            .status()
            .ok()?;
        assert!(status.success(), "{cxx} failed to compile quant.cuh and quant_ggml.cuh for the host");
        Some(exe)
    }

    /// Decodes `m` with the host build of its reader, as uploaded, and
    /// compares every element with the reference's, bit for bit, on the
    /// element path and (where the GEMV takes it) the chunk path. Returns
    /// whether the chunk path ran.
    fn check_host_decode(exe: &Path, dir: &Path, what: &str, m: &QuantizedMatrix) -> bool {
        let (n, k) = (m.rows(), m.cols());
        let packed = pack(m, ALIGN_WORDS);
        let p = QuantMatmulParams::new(&packed.layout, 1, n, k, false).unwrap();
        // SAFETY: a #[repr(C)] struct of 4-byte fields, no padding.
        let params = unsafe {
            std::slice::from_raw_parts((&p as *const QuantMatmulParams).cast::<u8>(), size_of::<QuantMatmulParams>())
        };
        let files = ["params", "codes", "scales", "out"].map(|f| dir.join(format!("{f}.bin")));
        std::fs::write(&files[0], params).unwrap();
        std::fs::write(&files[1], &packed.codes).unwrap();
        std::fs::write(&files[2], &packed.scales).unwrap();
        let ok = Command::new(exe).arg((packed.layout.fmt as u32).to_string()).args(&files).status().unwrap();
        assert!(ok.success(), "{what}: the host decoder failed");
        let out: Vec<f32> = bytemuck::pod_collect_to_vec(&std::fs::read(&files[3]).unwrap());
        let want = m.dequantize();
        let (elem, chunk) = out.split_at(n * k);
        for (path, got) in [("element", elem), ("chunk", chunk)] {
            if path == "chunk" && p.vec == 0 {
                continue;
            }
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{what} k={k} {path}: element [{}, {}]: {g} vs {w}", i / k, i % k);
            }
        }
        p.vec == 1
    }

    /// `rows` rows of `blocks` random blocks of `ty` (SplitMix64 bytes). With
    /// `normal_f16`, every f16 field (scale, min) is a normal number of
    /// magnitude 2^-8 .. 2^-4, either sign, as the conformance cases'
    /// `random_blocks`; else any finite f16 (zero and subnormals included).
    pub(in crate::ops) fn random_blocks(
        seed: u64,
        ty: GgmlType,
        rows: usize,
        blocks: usize,
        normal_f16: bool,
    ) -> QuantizedMatrix {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut bytes: Vec<u8> = (0..rows * blocks * ty.type_size()).map(|_| next() as u8).collect();
        for block in bytes.chunks_exact_mut(ty.type_size()) {
            for &at in f16_fields(ty) {
                let mut h = u16::from_le_bytes([block[at], block[at + 1]]);
                if normal_f16 {
                    // exponent 7..11 of 15, a random mantissa and sign
                    h = (h & 0x83ff) | ((7 + (next() % 5) as u16) << 10);
                } else if h & 0x7c00 == 0x7c00 {
                    h ^= 0x4000; // no inf or NaN
                }
                block[at..at + 2].copy_from_slice(&h.to_le_bytes());
            }
        }
        let cols = blocks * ty.block_size();
        QuantizedMatrix::Ggml(GgmlBlocks::new(ty, rows, cols, bytes.into()).expect("whole blocks"))
    }

    /// quant.cuh's and quant_ggml.cuh's weight readers (both the per-element
    /// path and the per-chunk path of the GEMV) give the CPU reference's
    /// dequantized weights bit for bit, for every format, reading the layout
    /// and params the backend uploads. Only kernel indexing, reductions and
    /// launches are left to the GPU run.
    #[test]
    fn quant_cuh_decodes_like_the_reference_on_the_host() {
        let dir = std::env::temp_dir().join(format!("ferrum-quant-decode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let Some(exe) = host_decoder(&dir) else {
            eprintln!("skipped: no C++ compiler (c++ or $CXX) to build quant.cuh for the host");
            return;
        };
        let cases = [
            ("nvfp4", 256),
            ("nvfp4", 48), // k not whole 16-byte chunks: element path only
            ("nvfp4:ct", 256),
            ("mxfp4", 256),
            ("mxfp4:ct", 96),
            ("fp8", 256),
            ("fp8:channel", 256),
            ("fp8:block4x32", 256),
            ("int8", 256),
            ("int8", 40),
            ("int4:g32", 256),
            ("int4:g32:asym", 256),
            ("int4:g2:asym", 64), // groups smaller than a code word: element path only
        ];
        let mut vec_cases = 0;
        for (fmt, k) in cases {
            let n = 6;
            let w: Vec<f32> = (0..n * k)
                .map(|i| match i % 53 {
                    0 => 0.0,
                    1 => 40.0, // an outlier per block
                    _ => ((i * 37 % 101) as f32 - 50.0) * 0.013 * (1 + i % 7) as f32,
                })
                .collect();
            let m = QuantizedMatrix::quantize(fmt.parse().unwrap(), &w, n, k).unwrap();
            vec_cases += check_host_decode(&exe, &dir, fmt, &m) as usize;
        }
        assert!(vec_cases >= 9, "the vec path ran for {vec_cases} cases");
        // GGUF blocks: 3 per row, so blocks start mid-word and rows need padding
        for (seed, ty) in PACKED_TYPES.into_iter().enumerate() {
            for normal_f16 in [true, false] {
                let m = random_blocks(seed as u64 * 2 + normal_f16 as u64, ty, 5, 3, normal_f16);
                let what = format!("{ty} ({} f16 fields)", if normal_f16 { "normal" } else { "any finite" });
                assert!(check_host_decode(&exe, &dir, &what, &m), "{what}: the GEMV's chunk path is not taken");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn params_structs_have_their_c_sizes() {
        assert_eq!(size_of::<MatmulParams>(), 24);
        assert_eq!(size_of::<QuantMatmulParams>(), 48);
        assert_eq!(size_of::<RowsParams>(), 16);
    }
}
