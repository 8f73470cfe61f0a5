//! # ferrum-shaders
//!
//! The WGSL sources of the WebGPU backend, one `.wgsl` file per op family
//! with the same stem as `engine/src/ops/<op>.rs`, exposed with
//! `include_str!` so the backend and the naga validation tests read the same
//! text.
//!
//! - [`SHADERS`]: every op, portable WGSL. Weights of any dtype are bound as
//!   `array<u32>`; an `override W_DTYPE` picks how a word widens to f32
//!   (f16 halves with `unpack2x16float`, bf16 with a shift).
//! - [`F16_SHADERS`]: `enable f16;` variants of the ops that read weights
//!   (`f16/<op>.wgsl`), for adapters with `SHADER_F16`: same `Params`,
//!   bindings and entry points, the weight bound as `array<f16>`.
//! - [`QUANT_SHADERS`], [`GGML_SHADERS`]: ops on packed quantized weights,
//!   codes and scales in two `array<u32>` bindings, decoded in registers. One
//!   body per op (`quant/<op>.wgsl`, same stem as the op) is joined with
//!   `concat!` behind one small reader per family of formats, which defines
//!   `load_q` (`quant/read_scaled.wgsl`: NVFP4, MXFP4, FP8, INT8, INT4 with
//!   separate scales; `quant/read_ggml.wgsl`: GGUF blocks, scales inside the
//!   blocks); an `override Q_FMT` picks the format within the family. The
//!   joined text is what naga validates and what the backend compiles.
//!   `quant/read_float.wgsl` is a third reader, for f32, f16 and bf16: behind
//!   it the quantized matmul body is [`MOE_MATMUL`] (the float stacks of
//!   moe_matmul, whose `moe` entry is in that body).
//!
//! Each file's `struct Params` is mirrored by a `#[repr(C)]` struct in
//! `backend-wgpu/src/ops/`, named in the comment beside it.

pub const ADD: &str = include_str!("../add.wgsl");
pub const ARGMAX: &str = include_str!("../argmax.wgsl");
/// Shaders that read a KV cache have its reader joined in front.
macro_rules! reads_cache {
    ($body:literal) => {
        concat!(include_str!("../cache_read.wgsl"), "\n", include_str!(concat!("../", $body)))
    };
}
pub const ATTENTION: &str = reads_cache!("attention.wgsl");
pub const INDEX_TOPK: &str = reads_cache!("index_topk.wgsl");
pub const GATHER_ROWS: &str = include_str!("../gather_rows.wgsl");
pub const GLU: &str = include_str!("../glu.wgsl");
pub const KV_STORE: &str = include_str!("../kv_store.wgsl");
pub const MATMUL: &str = include_str!("../matmul.wgsl");
pub const CONCAT: &str = include_str!("../concat.wgsl");
pub const MOE_COMBINE: &str = include_str!("../moe_combine.wgsl");
pub const MOE_ROUTE: &str = include_str!("../moe_route.wgsl");
pub const RMS_NORM: &str = include_str!("../rms_norm.wgsl");
pub const ROPE: &str = include_str!("../rope.wgsl");
pub const SAMPLE: &str = include_str!("../sample.wgsl");
pub const SCALE: &str = include_str!("../scale.wgsl");
pub const SOFTCAP: &str = include_str!("../softcap.wgsl");

pub const GATHER_ROWS_F16: &str = include_str!("../f16/gather_rows.wgsl");
pub const MATMUL_F16: &str = include_str!("../f16/matmul.wgsl");

/// `$reader` (a family's `load_q`) in front of an op body in `quant/`.
macro_rules! quant {
    ($reader:literal, $body:literal) => {
        concat!(include_str!(concat!("../quant/", $reader)), "\n", include_str!(concat!("../quant/", $body)))
    };
}
pub const MATMUL_QUANT: &str = quant!("read_scaled.wgsl", "matmul.wgsl");
pub const GATHER_ROWS_QUANT: &str = quant!("read_scaled.wgsl", "gather_rows.wgsl");
pub const MATMUL_GGML: &str = quant!("read_ggml.wgsl", "matmul.wgsl");
pub const GATHER_ROWS_GGML: &str = quant!("read_ggml.wgsl", "gather_rows.wgsl");
/// moe_matmul with a float stack: the quantized matmul body (its `moe`
/// entry) behind the float reader. Quantized stacks use `moe` of
/// [`MATMUL_QUANT`] and [`MATMUL_GGML`].
pub const MOE_MATMUL: &str = quant!("read_float.wgsl", "matmul.wgsl");

/// `(op file stem, WGSL source)` for every shader.
pub const SHADERS: &[(&str, &str)] = &[
    ("add", ADD),
    ("argmax", ARGMAX),
    ("attention", ATTENTION),
    ("concat", CONCAT),
    ("gather_rows", GATHER_ROWS),
    ("glu", GLU),
    ("index_topk", INDEX_TOPK),
    ("kv_store", KV_STORE),
    ("matmul", MATMUL),
    ("moe_combine", MOE_COMBINE),
    ("moe_matmul", MOE_MATMUL),
    ("moe_route", MOE_ROUTE),
    ("rms_norm", RMS_NORM),
    ("rope", ROPE),
    ("sample", SAMPLE),
    ("scale", SCALE),
    ("softcap", SOFTCAP),
];

/// `(op file stem, WGSL source)` of the native-f16 variants.
pub const F16_SHADERS: &[(&str, &str)] = &[("gather_rows", GATHER_ROWS_F16), ("matmul", MATMUL_F16)];

/// `(op file stem, WGSL source)` of the quantized-weight variants for
/// formats with separate scales.
pub const QUANT_SHADERS: &[(&str, &str)] = &[("gather_rows", GATHER_ROWS_QUANT), ("matmul", MATMUL_QUANT)];

/// `(op file stem, WGSL source)` of the quantized-weight variants for GGUF
/// block formats: the same bodies as [`QUANT_SHADERS`], another reader.
pub const GGML_SHADERS: &[(&str, &str)] = &[("gather_rows", GATHER_ROWS_GGML), ("matmul", MATMUL_GGML)];

/// The quantized-weight variant of `stem`, if there is one.
pub fn quant_source(stem: &str) -> Option<&'static str> {
    QUANT_SHADERS.iter().find(|(s, _)| *s == stem).map(|(_, src)| *src)
}

/// The GGUF-block variant of `stem`, if there is one.
pub fn ggml_source(stem: &str) -> Option<&'static str> {
    GGML_SHADERS.iter().find(|(s, _)| *s == stem).map(|(_, src)| *src)
}

/// The source for `stem`, the native-f16 variant when asked for and present.
pub fn source(stem: &str, native_f16: bool) -> Option<&'static str> {
    let table = if native_f16 { F16_SHADERS } else { SHADERS };
    table.iter().find(|(s, _)| *s == stem).map(|(_, src)| *src)
}

#[cfg(test)]
mod tests {
    use super::*;
    use naga::valid::{Capabilities, ValidationFlags, Validator};

    /// What every WebGPU adapter offers; `unpack2x16float` needs
    /// SHADER_FLOAT16_IN_FLOAT32 (wgpu's downlevel SHADER_F16_IN_F32).
    const PORTABLE: Capabilities = Capabilities::SHADER_FLOAT16_IN_FLOAT32;

    fn validate(name: &str, src: &str) -> naga::Module {
        let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
        let caps = PORTABLE | Capabilities::SHADER_FLOAT16;
        Validator::new(ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
        module
    }

    #[test]
    fn every_shader_parses_and_validates() {
        for (stem, src) in SHADERS {
            validate(stem, src);
        }
        for (stem, src) in F16_SHADERS {
            validate(&format!("f16/{stem}"), src);
        }
        for (stem, src) in QUANT_SHADERS {
            validate(&format!("quant/{stem}"), src);
        }
        for (stem, src) in GGML_SHADERS {
            validate(&format!("ggml/{stem}"), src);
        }
    }

    /// Portable shaders must not need the f16 extension.
    #[test]
    fn portable_shaders_do_not_enable_f16() {
        for (stem, src) in SHADERS.iter().chain(QUANT_SHADERS).chain(GGML_SHADERS) {
            let module = naga::front::wgsl::parse_str(src).unwrap();
            Validator::new(ValidationFlags::all(), PORTABLE)
                .validate(&module)
                .unwrap_or_else(|e| panic!("{stem}: {}", e.emit_to_string(src)));
        }
    }

    /// One shader per op file, same stems; every f16 variant has a portable twin.
    #[test]
    fn stems_match_the_op_files() {
        let ops = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../engine/src/ops")).unwrap();
        let mut op_stems: Vec<String> = ops
            .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".rs").to_string())
            .filter(|s| s != "mod")
            .collect();
        op_stems.sort();
        let mut shader_stems: Vec<String> = SHADERS.iter().map(|(s, _)| s.to_string()).collect();
        shader_stems.sort();
        assert_eq!(shader_stems, op_stems);
        for (stem, _) in F16_SHADERS {
            assert!(source(stem, false).is_some(), "f16/{stem} has no portable twin");
        }
        for (stem, _) in QUANT_SHADERS.iter().chain(GGML_SHADERS) {
            assert!(source(stem, false).is_some(), "quant/{stem} is not an op");
        }
    }

    fn entries(m: &naga::Module) -> Vec<String> {
        m.entry_points.iter().map(|e| e.name.clone()).collect()
    }

    fn bindings(m: &naga::Module) -> Vec<(u32, u32, Option<String>)> {
        let mut b: Vec<_> = m
            .global_variables
            .iter()
            .filter_map(|(_, g)| g.binding.as_ref().map(|rb| (rb.group, rb.binding, g.name.clone())))
            .collect();
        b.sort();
        b
    }

    /// A variant's entry points and bindings are its twin's, so one pipeline
    /// layout serves both.
    #[test]
    fn f16_variants_mirror_their_twins() {
        for (stem, src) in F16_SHADERS {
            let f16 = validate(stem, src);
            let portable = validate(stem, source(stem, false).unwrap());
            assert_eq!(entries(&f16), entries(&portable), "{stem}");
            assert_eq!(bindings(&f16), bindings(&portable), "{stem}");
        }
    }

    /// Both reader families serve the same ops through the same body, so the
    /// backend plans them alike.
    #[test]
    fn every_reader_family_has_the_same_ops() {
        let stems = |t: &[(&'static str, &'static str)]| t.iter().map(|(s, _)| *s).collect::<Vec<_>>();
        assert_eq!(stems(QUANT_SHADERS), stems(GGML_SHADERS));
        for (stem, src) in GGML_SHADERS {
            let ggml = validate(stem, src);
            let scaled = validate(stem, quant_source(stem).unwrap());
            assert_eq!(entries(&ggml), entries(&scaled), "{stem}");
            assert_eq!(bindings(&ggml), bindings(&scaled), "{stem}");
        }
    }
}
