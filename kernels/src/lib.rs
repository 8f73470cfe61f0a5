//! # ferrum-kernels
//!
//! The CUDA C sources of the CUDA backend, one `.cu` file per op family (the
//! same stem as `engine/src/ops/<op>.rs`) plus a shared `cu/common.cuh`,
//! exposed with `include_str!` and compiled with NVRTC at first use (never
//! committed as PTX or cubin).
//!
//! - [`KERNELS`]: `(stem, source)` for every kernel file.
//! - [`HEADERS`]: `common.cuh`, which each kernel `#include`s, `quant.cuh`
//!   and `quant_ggml.cuh` (the quantized-weight decoders and readers, also
//!   compiled on the host by backend-cuda's tests), and `gemv.cuh` (the
//!   GEMV loop of matmul and moe_matmul).
//! - [`program`]: a kernel's source with its headers pasted in, ready for
//!   NVRTC without any include path (the kernels use no CUDA header: bf16 is
//!   widened with a shift, f16 with the PTX `cvt.f32.f16` instruction, and
//!   KV cache elements are rounded and widened by common.cuh's own f16, bf16
//!   and fp8 E4M3 conversions).
//! - [`ENTRY_POINTS`]: the `extern "C"` kernels each file defines, so the
//!   backend and the compile test agree on what must exist.

/// `common.cuh`: dtype widening (and rounding into a KV cache), warp and block reductions.
pub const COMMON: &str = include_str!("../cu/common.cuh");

/// `quant.cuh`: the decoders of engine/src/quant/device_layout.rs.
pub const QUANT: &str = include_str!("../cu/quant.cuh");

/// `quant_ggml.cuh`: the decoders of GGUF blocks kept packed (after `quant.cuh`).
pub const QUANT_GGML: &str = include_str!("../cu/quant_ggml.cuh");

/// `gemv.cuh`: one warp's dot products of a weight row with rows of x (after `common.cuh`).
pub const GEMV: &str = include_str!("../cu/gemv.cuh");

/// `(file name, text)` of every header a kernel may `#include "..."`.
pub const HEADERS: &[(&str, &str)] =
    &[("common.cuh", COMMON), ("quant.cuh", QUANT), ("quant_ggml.cuh", QUANT_GGML), ("gemv.cuh", GEMV)];

/// `(op file stem, CUDA C source)` for every kernel.
pub const KERNELS: &[(&str, &str)] = &[
    ("add", include_str!("../cu/add.cu")),
    ("argmax", include_str!("../cu/argmax.cu")),
    ("attention", include_str!("../cu/attention.cu")),
    ("concat", include_str!("../cu/concat.cu")),
    ("gather_rows", include_str!("../cu/gather_rows.cu")),
    ("glu", include_str!("../cu/glu.cu")),
    ("index_topk", include_str!("../cu/index_topk.cu")),
    ("kv_store", include_str!("../cu/kv_store.cu")),
    ("matmul", include_str!("../cu/matmul.cu")),
    ("moe_combine", include_str!("../cu/moe_combine.cu")),
    ("moe_matmul", include_str!("../cu/moe_matmul.cu")),
    ("moe_route", include_str!("../cu/moe_route.cu")),
    ("rms_norm", include_str!("../cu/rms_norm.cu")),
    ("rope", include_str!("../cu/rope.cu")),
    ("sample", include_str!("../cu/sample.cu")),
    ("scale", include_str!("../cu/scale.cu")),
    ("softcap", include_str!("../cu/softcap.cu")),
];

/// `(op file stem, extern "C" kernels it defines)`.
pub const ENTRY_POINTS: &[(&str, &[&str])] = &[
    ("add", &["add"]),
    ("argmax", &["argmax"]),
    ("attention", &["attention_f32", "attention_f16", "attention_bf16", "attention_fp8"]),
    ("concat", &["concat"]),
    (
        "gather_rows",
        &[
            "gather_rows_f32",
            "gather_rows_f16",
            "gather_rows_bf16",
            "gather_rows_nvfp4",
            "gather_rows_nvfp4_ct",
            "gather_rows_mxfp4",
            "gather_rows_fp8",
            "gather_rows_int8",
            "gather_rows_int4",
            "gather_rows_q4_0",
            "gather_rows_q4_1",
            "gather_rows_q5_0",
            "gather_rows_q5_1",
            "gather_rows_q8_0",
            "gather_rows_q2_k",
            "gather_rows_q3_k",
            "gather_rows_q4_k",
            "gather_rows_q5_k",
            "gather_rows_q6_k",
        ],
    ),
    ("glu", &["glu"]),
    ("index_topk", &["index_topk_f32", "index_topk_f16", "index_topk_bf16", "index_topk_fp8"]),
    ("kv_store", &["kv_store_f32", "kv_store_f16", "kv_store_bf16", "kv_store_fp8"]),
    (
        "matmul",
        &[
            "matmul_gemv_f32",
            "matmul_gemv_f16",
            "matmul_gemv_bf16",
            "matmul_tiled_f32",
            "matmul_tiled_f16",
            "matmul_tiled_bf16",
            "matmul_gemv_nvfp4",
            "matmul_gemv_nvfp4_ct",
            "matmul_gemv_mxfp4",
            "matmul_gemv_fp8",
            "matmul_gemv_int8",
            "matmul_gemv_int4",
            "matmul_gemv_q4_0",
            "matmul_gemv_q4_1",
            "matmul_gemv_q5_0",
            "matmul_gemv_q5_1",
            "matmul_gemv_q8_0",
            "matmul_gemv_q2_k",
            "matmul_gemv_q3_k",
            "matmul_gemv_q4_k",
            "matmul_gemv_q5_k",
            "matmul_gemv_q6_k",
            "matmul_tiled_nvfp4",
            "matmul_tiled_nvfp4_ct",
            "matmul_tiled_mxfp4",
            "matmul_tiled_fp8",
            "matmul_tiled_int8",
            "matmul_tiled_int4",
            "matmul_tiled_q4_0",
            "matmul_tiled_q4_1",
            "matmul_tiled_q5_0",
            "matmul_tiled_q5_1",
            "matmul_tiled_q8_0",
            "matmul_tiled_q2_k",
            "matmul_tiled_q3_k",
            "matmul_tiled_q4_k",
            "matmul_tiled_q5_k",
            "matmul_tiled_q6_k",
            "matmul_dequant_nvfp4",
            "matmul_dequant_nvfp4_ct",
            "matmul_dequant_mxfp4",
            "matmul_dequant_fp8",
            "matmul_dequant_int8",
            "matmul_dequant_int4",
            "matmul_dequant_q4_0",
            "matmul_dequant_q4_1",
            "matmul_dequant_q5_0",
            "matmul_dequant_q5_1",
            "matmul_dequant_q8_0",
            "matmul_dequant_q2_k",
            "matmul_dequant_q3_k",
            "matmul_dequant_q4_k",
            "matmul_dequant_q5_k",
            "matmul_dequant_q6_k",
            "matmul_x_to_bf16",
            "matmul_x_to_f16",
            "matmul_add_bias",
        ],
    ),
    ("moe_combine", &["moe_combine"]),
    (
        "moe_matmul",
        &[
            "moe_matmul_f32",
            "moe_matmul_f16",
            "moe_matmul_bf16",
            "moe_matmul_nvfp4",
            "moe_matmul_nvfp4_ct",
            "moe_matmul_mxfp4",
            "moe_matmul_fp8",
            "moe_matmul_int8",
            "moe_matmul_int4",
            "moe_matmul_q4_0",
            "moe_matmul_q4_1",
            "moe_matmul_q5_0",
            "moe_matmul_q5_1",
            "moe_matmul_q8_0",
            "moe_matmul_q2_k",
            "moe_matmul_q3_k",
            "moe_matmul_q4_k",
            "moe_matmul_q5_k",
            "moe_matmul_q6_k",
        ],
    ),
    ("moe_route", &["moe_route"]),
    ("rms_norm", &["rms_norm"]),
    ("rope", &["rope"]),
    ("sample", &["sample"]),
    ("scale", &["scale"]),
    ("softcap", &["softcap"]),
];

#[cfg(test)]
const INCLUDE_COMMON: &str = "#include \"common.cuh\"";

/// A kernel's source with each `#include "<header>"` line replaced by the
/// header itself: one self-contained NVRTC program.
pub fn program(source: &str) -> String {
    HEADERS.iter().fold(source.to_string(), |src, (name, text)| src.replacen(&format!("#include \"{name}\""), text, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_includes_common_and_defines_its_entry_points() {
        assert_eq!(KERNELS.len(), ENTRY_POINTS.len());
        for ((stem, src), (stem2, entries)) in KERNELS.iter().zip(ENTRY_POINTS) {
            assert_eq!(stem, stem2);
            assert!(src.contains(INCLUDE_COMMON), "{stem}.cu does not include common.cuh");
            let full = program(src);
            assert!(!full.contains("#include"), "{stem}.cu includes a header program() does not paste");
            // every kernel defined literally is listed (macro-made ones, and
            // the converse, are checked on the PTX by backend-cuda/tests/nvrtc.rs)
            for def in full.split("extern \"C\" __global__ void ").skip(1) {
                let name = def.split('(').next().unwrap_or_default();
                if name.contains("##") {
                    continue; // a macro's template
                }
                assert!(entries.contains(&name), "{stem}.cu defines {name}, missing from ENTRY_POINTS");
            }
            assert!(!entries.is_empty());
        }
    }

    /// One kernel file per op, with the op's name (docs/adding-an-op.md).
    #[test]
    fn stems_are_the_op_names() {
        let mut stems: Vec<_> = KERNELS.iter().map(|(s, _)| *s).collect();
        stems.sort();
        let mut want = vec![
            "add",
            "argmax",
            "attention",
            "concat",
            "gather_rows",
            "glu",
            "index_topk",
            "kv_store",
            "matmul",
            "moe_combine",
            "moe_matmul",
            "moe_route",
            "rms_norm",
            "rope",
            "sample",
            "scale",
            "softcap",
        ];
        want.sort();
        assert_eq!(stems, want);
    }
}
