//! The quantization formats of `ferrum_engine::quant` against files written by
//! the real tools (`tools/fixtures/make_quant_fixtures.py`; NVIDIA ModelOpt
//! 0.47.0, compressed-tensors 0.20.1, torch 2.15.0, transformers 5.23.0, and a
//! NumPy reference of the OCP MX rule): codes and scales must match bit for
//! bit. Then error bounds of dequantize(quantize(W)) on random matrices, and
//! malformed inputs (errors, never panics).

use std::path::{Path, PathBuf};

use ferrum_engine::loader::SafetensorsFile;
use ferrum_engine::loader::safetensors::StDtype;
use ferrum_engine::quant::int4::unpack_ct_zero_points;
use ferrum_engine::quant::{
    Fp8Scaling, Fp8Weight, Int4, Int8, Int8Rule, MxScaleRule, Mxfp4, Nvfp4, Nvfp4Convention, QuantFormat, QuantMatrix,
    QuantizedMatrix, e2m1, fp8,
};
use half::{bf16, f16};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/quant")
}

/// One fixture file with typed getters.
struct Fixture {
    file: SafetensorsFile,
}

impl Fixture {
    fn open(name: &str) -> Fixture {
        let path = data_dir().join(name);
        Fixture { file: SafetensorsFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) }
    }

    fn raw(&self, name: &str) -> (StDtype, Vec<usize>, &[u8]) {
        let e = self.file.tensors.get(name).unwrap_or_else(|| panic!("{}: no tensor {name}", self.file.path.display()));
        (e.dtype, e.shape.clone(), self.file.bytes(e))
    }

    fn bytes(&self, name: &str, dtype: StDtype) -> Vec<u8> {
        let (d, _, b) = self.raw(name);
        assert_eq!(d, dtype, "{name}");
        b.to_vec()
    }

    fn shape(&self, name: &str) -> Vec<usize> {
        self.raw(name).1
    }

    /// F32 as is, F16 widened.
    fn f32s(&self, name: &str) -> Vec<f32> {
        let (d, _, b) = self.raw(name);
        match d {
            StDtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            StDtype::F16 => b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => panic!("{name}: {other:?} is not a float"),
        }
    }

    fn i8s(&self, name: &str) -> Vec<i8> {
        self.bytes(name, StDtype::I8).iter().map(|&b| b as i8).collect()
    }
}

/// The input matrices: (name, values, rows, cols).
fn inputs() -> Vec<(&'static str, Vec<f32>, usize, usize)> {
    let f = Fixture::open("inputs.safetensors");
    ["edge", "rand"]
        .into_iter()
        .map(|n| {
            let s = f.shape(n);
            (n, f.f32s(n), s[0], s[1])
        })
        .collect()
}

/// Asserts two byte strings are equal, naming the first difference.
fn assert_bytes_eq(what: &str, ours: &[u8], theirs: &[u8]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    if let Some(i) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
        let n = ours.iter().zip(theirs).filter(|(a, b)| a != b).count();
        panic!("{what}: {n} bytes differ, first at {i}: ours {:#04x}, theirs {:#04x}", ours[i], theirs[i]);
    }
}

fn assert_f32_bits_eq(what: &str, ours: &[f32], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{what}[{i}]: ours {a:e}, theirs {b:e}");
    }
}

fn f32_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

// ---------------------------------------------------------------- FP8 E4M3 cast

#[test]
fn fp8_e4m3_encode_and_decode_match_torch() {
    let f = Fixture::open("fp8_cast.safetensors");
    let (x, expect) = (f.f32s("x"), f.bytes("e4m3", StDtype::U8));
    let ours: Vec<u8> = x.iter().map(|&v| fp8::encode(v)).collect();
    for (i, (a, b)) in ours.iter().zip(&expect).enumerate() {
        assert_eq!(a, b, "x[{i}] = {:e} ({:#010x}): ours {a:#04x}, torch {b:#04x}", x[i], x[i].to_bits());
    }
    let all = f.f32s("all_codes");
    let decoded: Vec<f32> = (0..=255u8).map(fp8::decode).collect();
    assert_f32_bits_eq("e4m3 decode", &decoded, &all);
    eprintln!("fp8 cast: {} values bit-exact with torch, 256 codes decode bit-exact", x.len());
}

// ---------------------------------------------------------------- NVFP4

/// The E2M1 codes of `make_quant_fixtures.py`'s `TIES` block (exact ties, ±6).
const TIE_CODES: [u8; 16] = [7, 0, 2, 2, 4, 4, 6, 6, 8, 10, 10, 12, 12, 14, 14, 15];

fn codes(packed: &[u8], start: usize, n: usize) -> Vec<u8> {
    (start..start + n).map(|i| e2m1::nibble(packed, i)).collect()
}

/// The `edge` matrix really holds the cases it is meant to (so the bit-exact
/// comparisons above cover them): checked on the tools' own output.
#[test]
fn fixtures_exercise_the_edge_cases() {
    let mo = Fixture::open("nvfp4_modelopt.safetensors");
    let ct = Fixture::open("nvfp4_ct.safetensors");
    let (mo_codes, ct_codes) = (mo.bytes("edge.weight", StDtype::U8), ct.bytes("edge.weight_packed", StDtype::U8));
    let (mo_scales, ct_scales) =
        (mo.bytes("edge.weight_scale", StDtype::F8E4M3), ct.bytes("edge.weight_scale", StDtype::F8E4M3));
    // Blocks of row 0: zero, ties at scale 4, ties at 0.5, small negatives at 4, 1e-7 values,
    // the tensor amax (scale 448), ties at 128.
    assert_eq!(&mo_scales[..7], &[0x38, 0x48, 0x30, 0x48, 0x01, 0x7E, 0x70], "ModelOpt: zero -> 1.0, tiny -> 2^-9");
    assert_eq!(&ct_scales[..7], &[0x20, 0x48, 0x30, 0x48, 0x20, 0x7E, 0x70], "compressed-tensors: zero -> 0.125");
    for packed in [&mo_codes, &ct_codes] {
        assert_eq!(codes(packed, 16, 16), TIE_CODES);
        assert_eq!(codes(packed, 32, 16), TIE_CODES.iter().rev().copied().collect::<Vec<_>>());
        // 6, -0.1, -0.2, -0.25, 0.1, 0.2, 0.25, -0.0, 0.0, -6, 5.9, -5.9, 0.26, -0.26, 0.24, -0.24
        assert_eq!(codes(packed, 48, 16), [7, 8, 8, 8, 0, 0, 0, 0, 0, 15, 7, 15, 1, 9, 0, 8], "small negatives -> 8");
        assert_eq!(codes(packed, 96, 16), TIE_CODES);
    }
    // Some block saturates because its E4M3 scale rounded down: a code 7 for |w| < 6 x scale is
    // impossible, so look for |w / s_eff| > 6 in the tools' output instead.
    let w = &inputs()[0].1;
    let s2 = mo.f32s("edge.weight_scale_2")[0];
    assert!((0..w.len()).any(|i| (w[i] / (fp8::decode(mo_scales[i / 16]) * s2)).abs() > 6.0), "no saturation");

    let mx = Fixture::open("mxfp4.safetensors");
    let (ocp_s, ct_s) = (mx.bytes("edge.ocp.scales", StDtype::U8), mx.bytes("edge.ct.weight_scale", StDtype::U8));
    let (ocp_c, ct_c) = (mx.bytes("edge.ocp.blocks", StDtype::U8), mx.bytes("edge.ct.weight_packed", StDtype::U8));
    // Row 1 (scales 8..11): ties at 2^-3; amax 7 * 2^-3 (OCP 2^-3 and saturate, c-t 2^-2); zero block.
    assert_eq!(&ocp_s[8..11], &[124, 124, 0]);
    assert_eq!(&ct_s[8..11], &[124, 125, 0]);
    for packed in [&ocp_c, &ct_c] {
        assert_eq!(codes(packed, 256, 16), TIE_CODES);
        assert_eq!(codes(packed, 272, 16), [8, 8, 0, 0, 0, 0, 0, 8, 1, 9, 2, 10, 2, 5, 14, 4]);
    }
    assert_eq!((e2m1::nibble(&ocp_c, 288), e2m1::nibble(&ct_c, 288)), (7, 6), "7 x 2^-3: saturated vs tie 3.5 -> 4");

    // INT4 (g32, symmetric) row 2 group 0: scale exactly 0.25, (k + 0.5) x 0.25 ties to even.
    let i4 = Fixture::open("int4.safetensors");
    assert_eq!(i4.f32s("edge.g32.weight_scale")[16], 0.25);
    let q: Vec<i8> =
        codes(&i4.bytes("edge.g32.weight_packed", StDtype::I32), 512, 16).iter().map(|&c| c as i8 - 8).collect();
    // 7.5, -7.5, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.5, 6.5, -6.5, 0.49, -0.51, 7, -7, 0 (x 0.25)
    assert_eq!(q, [7, -8, 0, 0, 2, -2, 2, -2, 4, 6, -6, 0, -1, 7, -7, 0]);
    let asym_scale = i4.f32s("edge.g32_asym.weight_scale")[17];
    let zp = unpack_ct_zero_points(&i4.bytes("edge.g32_asym.weight_zero_point", StDtype::I32), 16, 8).unwrap();
    assert_eq!((asym_scale, zp[17]), (0.25, 0), "zero point -0.5 rounds to even 0");
}

#[test]
fn nvfp4_modelopt_bit_exact() {
    let f = Fixture::open("nvfp4_modelopt.safetensors");
    for (name, w, rows, cols) in inputs() {
        let q = Nvfp4::quantize(Nvfp4Convention::ModelOpt, &w, rows, cols).unwrap();
        assert_bytes_eq(&format!("{name} weight"), q.packed(), &f.bytes(&format!("{name}.weight"), StDtype::U8));
        let scales = f.bytes(&format!("{name}.weight_scale"), StDtype::F8E4M3);
        assert_bytes_eq(&format!("{name} weight_scale"), q.scales(), &scales);
        let s2 = f.f32s(&format!("{name}.weight_scale_2"));
        assert_f32_bits_eq(&format!("{name} weight_scale_2"), &[q.tensor_scale()], &s2);
        // The stored tensors load back into the same matrix.
        let back =
            Nvfp4::from_parts(Nvfp4Convention::ModelOpt, rows, cols, q.packed().to_vec(), scales, s2[0]).unwrap();
        assert_eq!(back, q);
    }
}

#[test]
fn nvfp4_compressed_tensors_bit_exact() {
    let f = Fixture::open("nvfp4_ct.safetensors");
    for (name, w, rows, cols) in inputs() {
        let q = Nvfp4::quantize(Nvfp4Convention::CompressedTensors, &w, rows, cols).unwrap();
        let packed = f.bytes(&format!("{name}.weight_packed"), StDtype::U8);
        assert_bytes_eq(&format!("{name} weight_packed"), q.packed(), &packed);
        let scales = f.bytes(&format!("{name}.weight_scale"), StDtype::F8E4M3);
        assert_bytes_eq(&format!("{name} weight_scale"), q.scales(), &scales);
        let g = f.f32s(&format!("{name}.weight_global_scale"));
        assert_f32_bits_eq(&format!("{name} weight_global_scale"), &[q.tensor_scale()], &g);
        if name == "edge" {
            // compressed-tensors decompresses FP4 to bf16: compare at that precision.
            let theirs = f.f32s("edge.dequant");
            let ours: Vec<f32> = q.dequantize().iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
            assert_f32_bits_eq("edge dequant (bf16)", &ours, &theirs);
        }
    }
}

// ---------------------------------------------------------------- MXFP4

#[test]
fn mxfp4_ocp_rule_and_compressed_tensors_bit_exact() {
    let f = Fixture::open("mxfp4.safetensors");
    for (name, w, rows, cols) in inputs() {
        let ocp = Mxfp4::quantize(MxScaleRule::Ocp, &w, rows, cols).unwrap();
        assert_bytes_eq(
            &format!("{name} OCP codes"),
            ocp.packed(),
            &f.bytes(&format!("{name}.ocp.blocks"), StDtype::U8),
        );
        assert_bytes_eq(
            &format!("{name} OCP scales"),
            ocp.scales(),
            &f.bytes(&format!("{name}.ocp.scales"), StDtype::U8),
        );
        let ct = Mxfp4::quantize(MxScaleRule::CompressedTensors, &w, rows, cols).unwrap();
        let packed = f.bytes(&format!("{name}.ct.weight_packed"), StDtype::U8);
        let scales = f.bytes(&format!("{name}.ct.weight_scale"), StDtype::U8);
        assert_bytes_eq(&format!("{name} compressed-tensors codes"), ct.packed(), &packed);
        assert_bytes_eq(&format!("{name} compressed-tensors scales"), ct.scales(), &scales);
        assert_ne!(ocp, ct, "{name}: the fixtures should exercise a block where the two rules differ");
        if name == "edge" {
            let theirs = f.f32s("edge.ct.dequant");
            let ours: Vec<f32> = ct.dequantize().iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
            assert_f32_bits_eq("edge dequant (bf16)", &ours, &theirs);
        }
    }
}

#[test]
fn mxfp4_gpt_oss_layout_matches_transformers() {
    let f = Fixture::open("gpt_oss.safetensors");
    let (blocks, bshape) = (f.bytes("blocks", StDtype::U8), f.shape("blocks"));
    let (scales, sshape) = (f.bytes("scales", StDtype::U8), f.shape("scales"));
    let theirs = f.f32s("dequant"); // [E, K, N]: transformers transposes
    let [experts, n, g, _] = bshape[..] else { panic!("blocks shape {bshape:?}") };
    let k = g * 32;
    for e in 0..experts {
        let m = Mxfp4::from_gpt_oss(&blocks, &bshape, &scales, &sshape, e).unwrap();
        assert_eq!((m.rows(), m.cols()), (n, k));
        let ours = m.dequantize();
        for r in 0..n {
            for c in 0..k {
                let (a, b) = (ours[r * k + c], theirs[(e * k + c) * n + r]);
                assert_eq!(a.to_bits(), b.to_bits(), "expert {e} row {r} col {c}: ours {a:e}, transformers {b:e}");
            }
        }
    }
}

// ---------------------------------------------------------------- FP8 weights

fn check_fp8(f: &Fixture, prefix: &str, scaling: Fp8Scaling, w: &[f32], rows: usize, cols: usize) {
    let q = Fp8Weight::quantize(scaling, w, rows, cols).unwrap();
    let data = f.bytes(&format!("{prefix}.weight"), StDtype::F8E4M3);
    if prefix.ends_with("modelopt") {
        // ModelOpt keeps a -0.0 weight as 0x80 where compressed-tensors (and we) write 0x00.
        let neg_zeros = w.iter().filter(|v| **v == 0.0 && v.is_sign_negative()).count();
        let mut ours = q.data().to_vec();
        for (o, v) in ours.iter_mut().zip(w) {
            if *v == 0.0 && v.is_sign_negative() {
                *o = 0x80;
            }
        }
        assert_bytes_eq(&format!("{prefix}.weight"), &ours, &data);
        assert_eq!(data.iter().zip(q.data()).filter(|(a, b)| a != b).count(), neg_zeros, "{prefix}");
        assert_f32_bits_eq(&format!("{prefix}.weight_scale"), q.scales(), &f.f32s(&format!("{prefix}.weight_scale")));
        return;
    }
    assert_bytes_eq(&format!("{prefix}.weight"), q.data(), &data);
    let scales = f.f32s(&format!("{prefix}.weight_scale"));
    assert_f32_bits_eq(&format!("{prefix}.weight_scale"), q.scales(), &scales);
    let back = Fp8Weight::from_parts(scaling, rows, cols, data, scales).unwrap();
    assert_eq!(back, q);
    let deq = format!("{prefix}.dequant");
    if f.file.tensors.contains_key(&deq) {
        assert_f32_bits_eq(&deq, &q.dequantize(), &f.f32s(&deq));
    }
}

#[test]
fn fp8_weights_bit_exact() {
    let f = Fixture::open("fp8_weight.safetensors");
    for (name, w, rows, cols) in inputs() {
        check_fp8(&f, &format!("{name}.ct_tensor"), Fp8Scaling::PerTensor, &w, rows, cols);
        check_fp8(&f, &format!("{name}.ct_channel"), Fp8Scaling::PerChannel, &w, rows, cols);
        check_fp8(&f, &format!("{name}.ct_block"), Fp8Scaling::DEEPSEEK_BLOCK, &w, rows, cols);
        check_fp8(&f, &format!("{name}.modelopt"), Fp8Scaling::PerTensor, &w, rows, cols);
    }
    let inp = Fixture::open("inputs.safetensors");
    let (w, s) = (inp.f32s("blk"), inp.shape("blk"));
    check_fp8(&f, "blk.ct_block", Fp8Scaling::DEEPSEEK_BLOCK, &w, s[0], s[1]);
}

// ---------------------------------------------------------------- INT8 / INT4

#[test]
fn int8_bit_exact() {
    let f = Fixture::open("int8.safetensors");
    let mut cases: Vec<_> =
        inputs().into_iter().map(|(n, w, r, c)| (format!("{n}.ct"), Int8Rule::CompressedTensors, w, r, c)).collect();
    let rand = inputs().into_iter().find(|i| i.0 == "rand").unwrap();
    cases.push(("rand.modelopt".into(), Int8Rule::ModelOpt, rand.1, rand.2, rand.3));
    for (prefix, rule, w, rows, cols) in cases {
        let q = Int8::quantize(rule, &w, rows, cols).unwrap();
        let data = f.i8s(&format!("{prefix}.weight"));
        assert_eq!(q.data(), &data[..], "{prefix}.weight");
        let scales = f.f32s(&format!("{prefix}.weight_scale"));
        assert_f32_bits_eq(&format!("{prefix}.weight_scale"), q.scales(), &scales);
        assert_eq!(Int8::from_parts(rows, cols, data, scales).unwrap(), q);
        let deq = format!("{prefix}.dequant");
        if f.file.tensors.contains_key(&deq) {
            assert_f32_bits_eq(&deq, &q.dequantize(), &f.f32s(&deq));
        }
    }
}

#[test]
fn int4_bit_exact_with_compressed_tensors_pack_quantized() {
    let f = Fixture::open("int4.safetensors");
    for (name, w, rows, cols) in inputs() {
        for (variant, group, symmetric) in [
            ("g32", 32, true),
            ("g64", 64, true),
            ("g128", 128, true),
            ("g32_asym", 32, false),
            ("g128_asym", 128, false),
        ] {
            let prefix = format!("{name}.{variant}");
            let q = Int4::quantize(group, symmetric, &w, rows, cols).unwrap();
            let packed = f.bytes(&format!("{prefix}.weight_packed"), StDtype::I32); // int32 words, little-endian
            assert_bytes_eq(&format!("{prefix}.weight_packed"), q.packed(), &packed);
            let scales = f.f32s(&format!("{prefix}.weight_scale"));
            assert_f32_bits_eq(&format!("{prefix}.weight_scale"), q.scales(), &scales);
            let zps = if symmetric {
                assert!(!f.file.tensors.contains_key(&format!("{prefix}.weight_zero_point")));
                None
            } else {
                let b = f.bytes(&format!("{prefix}.weight_zero_point"), StDtype::I32);
                let z = unpack_ct_zero_points(&b, rows, cols / group).unwrap();
                assert_eq!(q.zero_points().unwrap(), &z[..], "{prefix}.weight_zero_point");
                Some(z)
            };
            assert_eq!(Int4::from_parts(rows, cols, group, packed, scales, zps).unwrap(), q);
            let deq = format!("{prefix}.dequant");
            if f.file.tensors.contains_key(&deq) {
                assert_f32_bits_eq(&deq, &q.dequantize(), &f.f32s(&deq));
            }
        }
    }
}

// ---------------------------------------------------------------- error bounds

/// Deterministic N(0, 1) samples (SplitMix64 + Box-Muller).
fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next().max(1e-300), next());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        })
        .collect()
}

/// A [64, 512] test matrix: normal, rows of different magnitudes, outliers, a zero block.
fn error_matrix() -> (Vec<f32>, usize, usize) {
    let (rows, cols) = (64, 512);
    let mut w = randn(rows * cols, 42);
    for r in 0..rows {
        let m = 10f32.powf(-2.0 + 3.0 * r as f32 / rows as f32);
        w[r * cols..(r + 1) * cols].iter_mut().for_each(|v| *v *= m);
    }
    w[3 * cols + 100] = 50.0;
    w[40 * cols + 7] = -80.0;
    w[10 * cols..10 * cols + 128].iter_mut().for_each(|v| *v = 0.0);
    (w, rows, cols)
}

fn rel_rms(w: &[f32], d: &[f32]) -> f64 {
    let num: f64 = w.iter().zip(d).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = w.iter().map(|a| (*a as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// The worst `|deq - w| / bound` over elements, where `bound(i)` is the
/// format's per-element bound; must be <= 1 (a slack of 1e-6 of the bound and
/// of |w| covers the f32 rounding of the scale, `w / scale` and `code * scale`).
fn worst_ratio(w: &[f32], d: &[f32], bound: impl Fn(usize) -> f32) -> f32 {
    w.iter()
        .zip(d)
        .enumerate()
        .map(|(i, (a, b))| {
            let (err, lim) = ((a - b).abs(), bound(i) * (1.0 + 1e-6) + a.abs() * 1e-6 + f32::MIN_POSITIVE);
            err / lim
        })
        .fold(0f32, f32::max)
}

/// E2M1 rounding bound for `x = w / s`: half a step, or the saturation error beyond 6.
fn e2m1_bound(x: f32, s: f32) -> f32 {
    e2m1::half_step(x).max(x.abs() - 6.0) * s
}

#[test]
fn dequantized_error_stays_within_each_formats_bound() {
    let (w, rows, cols) = error_matrix();
    let mut report = Vec::new();

    for conv in [Nvfp4Convention::ModelOpt, Nvfp4Convention::CompressedTensors] {
        let q = Nvfp4::quantize(conv, &w, rows, cols).unwrap();
        let d = q.dequantize();
        let factor = |i: usize| {
            let s = fp8::decode(q.scales()[i / 16]);
            match conv {
                Nvfp4Convention::ModelOpt => s * q.tensor_scale(),
                Nvfp4Convention::CompressedTensors => s / q.tensor_scale(),
            }
        };
        let worst = worst_ratio(&w, &d, |i| e2m1_bound(w[i] / factor(i), factor(i)));
        // Where the block's E4M3 scale is normal it is within 2^-4 of amax_b / 6, so
        // |w / s_eff| <= 6 / (1 - 2^-4) = 6.4 and |err| <= s_eff (the top half-step).
        let normal: Vec<usize> = (0..w.len()).filter(|&i| fp8::decode(q.scales()[i / 16]) >= 1.0 / 64.0).collect();
        let max_x = normal.iter().map(|&i| (w[i] / factor(i)).abs()).fold(0f32, f32::max);
        let worst_vs_s = normal.iter().map(|&i| (w[i] - d[i]).abs() / factor(i)).fold(0f32, f32::max);
        assert!(worst <= 1.0, "NVFP4 {conv:?}: error {worst} x bound");
        assert!(max_x <= 6.4 * (1.0 + 1e-6) && worst_vs_s <= 1.0 + 1e-5, "NVFP4 {conv:?}: {max_x} {worst_vs_s}");
        report.push(format!(
            "nvfp4 {conv:?}: rel RMS {:.4}, worst |err|/bound {worst:.3}, normal scales: max |err|/s_eff {worst_vs_s:.3}, max |w/s_eff| {max_x:.3}",
            rel_rms(&w, &d)
        ));
    }

    for rule in [MxScaleRule::Ocp, MxScaleRule::CompressedTensors] {
        let q = Mxfp4::quantize(rule, &w, rows, cols).unwrap();
        let d = q.dequantize();
        let scale = |i: usize| ferrum_engine::quant::mxfp4::e8m0_to_f32(q.scales()[i / 32]);
        let worst = worst_ratio(&w, &d, |i| e2m1_bound(w[i] / scale(i), scale(i)));
        let max_x = (0..w.len()).map(|i| (w[i] / scale(i)).abs()).fold(0f32, f32::max);
        let max_err_vs_s = (0..w.len()).map(|i| (w[i] - d[i]).abs() / scale(i)).fold(0f32, f32::max);
        assert!(worst <= 1.0, "MXFP4 {rule:?}: error {worst} x bound");
        let x_limit = if rule == MxScaleRule::Ocp { 8.0 } else { 7.0 };
        assert!(max_x < x_limit, "MXFP4 {rule:?}: |w / scale| reached {max_x}");
        report.push(format!(
            "mxfp4 {rule:?}: rel RMS {:.4}, worst |err|/bound {worst:.3}, max |err|/scale {max_err_vs_s:.3}, max |w/scale| {max_x:.3}",
            rel_rms(&w, &d)
        ));
    }

    for scaling in [Fp8Scaling::PerTensor, Fp8Scaling::PerChannel, Fp8Scaling::DEEPSEEK_BLOCK] {
        let q = Fp8Weight::quantize(scaling, &w, rows, cols).unwrap();
        let d = q.dequantize();
        let sc = scaling.scale_shape(rows, cols)[1];
        let scale = |i: usize| {
            let (r, c) = (i / cols, i % cols);
            match scaling {
                Fp8Scaling::PerTensor => q.scales()[0],
                Fp8Scaling::PerChannel => q.scales()[r],
                Fp8Scaling::Block { rows: br, cols: bc } => q.scales()[(r / br) * sc + c / bc],
            }
        };
        // Normal E4M3 range: half an ulp = 2^-4 of the value; subnormal: half of 2^-9.
        let worst = worst_ratio(&w, &d, |i| (w[i].abs() * 0.0625).max(scale(i) / 1024.0));
        let max_rel = (0..w.len())
            .filter(|&i| (w[i] / scale(i)).abs() >= 1.0 / 64.0)
            .map(|i| ((w[i] - d[i]) / w[i]).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1.0, "FP8 {scaling:?}: error {worst} x bound");
        report.push(format!(
            "fp8 {scaling:?}: rel RMS {:.5}, worst |err|/bound {worst:.3}, max rel err (normal range) {max_rel:.4}",
            rel_rms(&w, &d)
        ));
    }

    for rule in [Int8Rule::CompressedTensors, Int8Rule::ModelOpt] {
        let q = Int8::quantize(rule, &w, rows, cols).unwrap();
        let d = q.dequantize();
        let worst = worst_ratio(&w, &d, |i| q.scales()[i / cols] / 2.0);
        assert!(worst <= 1.0, "INT8 {rule:?}: error {worst} x bound");
        report.push(format!("int8 {rule:?}: rel RMS {:.5}, worst |err|/(scale/2) {worst:.3}", rel_rms(&w, &d)));
    }

    for (group, symmetric) in [(32, true), (64, true), (128, true), (32, false), (128, false)] {
        let q = Int4::quantize(group, symmetric, &w, rows, cols).unwrap();
        let d = q.dequantize();
        let worst = worst_ratio(&w, &d, |i| q.scales()[i / group] / 2.0);
        assert!(worst <= 1.0, "INT4 g{group} sym={symmetric}: error {worst} x bound");
        report.push(format!(
            "int4 g{group} {}: rel RMS {:.4}, worst |err|/(scale/2) {worst:.3}",
            if symmetric { "sym" } else { "asym" },
            rel_rms(&w, &d)
        ));
    }
    eprintln!("{}", report.join("\n"));
}

// ---------------------------------------------------------------- the generic API

#[test]
fn quant_format_names_round_trip() {
    for s in [
        "nvfp4",
        "nvfp4:ct",
        "mxfp4",
        "mxfp4:ct",
        "fp8",
        "fp8:channel",
        "fp8:block128",
        "fp8:block64x32",
        "int8",
        "int8:modelopt",
        "int4:g128",
        "int4:g64",
        "int4:g32:asym",
    ] {
        let f: QuantFormat = s.parse().unwrap();
        assert_eq!(f.to_string(), s);
    }
    let aliases = [
        ("NVFP4:modelopt", "nvfp4"),
        ("nvfp4:compressed-tensors", "nvfp4:ct"),
        ("mxfp4:ocp", "mxfp4"),
        ("fp8:tensor", "fp8"),
        ("fp8:block", "fp8:block128"),
        ("int8:ct", "int8"),
        ("int4", "int4:g128"),
        ("int4:asym", "int4:g128:asym"),
        ("int4:asym:g32", "int4:g32:asym"),
        (" int4:g64:sym ", "int4:g64"),
    ];
    for (alias, canonical) in aliases {
        assert_eq!(alias.parse::<QuantFormat>().unwrap().to_string(), canonical, "{alias}");
    }
    for bad in [
        "",
        "nvfp3",
        "nvfp4:foo",
        "int4:g",
        "int4:g3",
        "int4:g0",
        "int4:g64:g32",
        "int4:asym:sym",
        "fp8:block0",
        "fp8:blockx",
        "mxfp4:ct:ocp",
    ] {
        assert!(bad.parse::<QuantFormat>().is_err(), "{bad:?} should not parse");
    }
}

const ALL_FORMATS: [&str; 12] = [
    "nvfp4",
    "nvfp4:ct",
    "mxfp4",
    "mxfp4:ct",
    "fp8",
    "fp8:channel",
    "fp8:block",
    "int8",
    "int8:modelopt",
    "int4",
    "int4:g32",
    "int4:g64:asym",
];

#[test]
fn quantized_matrix_rows_agree_with_the_whole_and_sizes_add_up() {
    let (rows, cols) = (130, 256);
    let w = randn(rows * cols, 7);
    for name in ALL_FORMATS {
        let format: QuantFormat = name.parse().unwrap();
        let q = QuantizedMatrix::quantize(format, &w, rows, cols).unwrap();
        assert_eq!((q.rows(), q.cols()), (rows, cols));
        // The stored data of MXFP4 and INT8 does not say which scale rule made it.
        let reported = match format {
            QuantFormat::Mxfp4(_) => QuantFormat::Mxfp4(MxScaleRule::Ocp),
            QuantFormat::Int8(_) => QuantFormat::Int8(Int8Rule::CompressedTensors),
            f => f,
        };
        assert_eq!(q.format(), reported, "{name}: the format the matrix reports");
        let whole = q.dequantize();
        let mut row = vec![0f32; cols];
        for r in [0, 1, 77, rows - 1] {
            q.dequantize_row_into(r, &mut row).unwrap();
            assert_f32_bits_eq(name, &row, &whole[r * cols..(r + 1) * cols]);
        }
        let elems = rows * cols;
        let expect = match format {
            QuantFormat::Nvfp4(_) => elems / 2 + elems / 16 + 4,
            QuantFormat::Mxfp4(_) => elems / 2 + elems / 32,
            QuantFormat::Fp8(s) => elems + 4 * s.scale_shape(rows, cols).iter().product::<usize>(),
            QuantFormat::Int8(_) => elems + 4 * rows,
            QuantFormat::Int4 { group, symmetric } => {
                elems / 2 + 4 * elems / group + if symmetric { 0 } else { (elems / group).div_ceil(2) }
            }
            QuantFormat::Ggml(ty) => ty.bytes_for(elems).unwrap(),
        };
        assert_eq!(q.storage_bytes(), expect, "{name}");
    }
}

// ---------------------------------------------------------------- malformed inputs

#[test]
fn malformed_inputs_are_errors_not_panics() {
    let w = randn(4 * 256, 1);
    for name in ALL_FORMATS {
        let format: QuantFormat = name.parse().unwrap();
        let block = match format {
            QuantFormat::Nvfp4(_) => 16,
            QuantFormat::Mxfp4(_) => 32,
            QuantFormat::Int4 { group, .. } => group,
            _ => 1,
        };
        assert!(QuantizedMatrix::quantize(format, &w, 4, 255).is_err(), "{name}: length != rows * cols");
        assert!(QuantizedMatrix::quantize(format, &w, 0, 256).is_err(), "{name}: empty");
        assert!(QuantizedMatrix::quantize(format, &[], 0, 0).is_err(), "{name}: empty");
        assert!(QuantizedMatrix::quantize(format, &w, usize::MAX, 2).is_err(), "{name}: overflow");
        if block > 1 {
            let k = block + block / 2;
            assert!(QuantizedMatrix::quantize(format, &w[..4 * k], 4, k).is_err(), "{name}: K = {k}");
        }
        let mut bad = w.clone();
        bad[5] = f32::NAN;
        assert!(QuantizedMatrix::quantize(format, &bad, 4, 256).is_err(), "{name}: NaN");
        bad[5] = f32::INFINITY;
        assert!(QuantizedMatrix::quantize(format, &bad, 4, 256).is_err(), "{name}: Inf");

        let q = QuantizedMatrix::quantize(format, &w, 4, 256).unwrap();
        let mut out = vec![0f32; 256];
        assert!(q.dequantize_row_into(4, &mut out).is_err(), "{name}: row out of range");
        assert!(q.dequantize_row_into(0, &mut out[..255]).is_err(), "{name}: short output");
        assert!(q.dequantize_row_into(0, &mut vec![0f32; 512]).is_err(), "{name}: long output");
    }
    assert!(Int4::quantize(3, true, &w, 4, 256).is_err(), "odd group");
    assert!(Int4::quantize(0, true, &w, 4, 256).is_err(), "zero group");
    assert!(Fp8Weight::quantize(Fp8Scaling::Block { rows: 0, cols: 128 }, &w, 4, 256).is_err(), "empty block");

    // Stored tensors of the wrong size.
    let c = Nvfp4Convention::CompressedTensors;
    assert!(Nvfp4::from_parts(c, 4, 256, vec![0; 511], vec![0x38; 64], 1.0).is_err());
    assert!(Nvfp4::from_parts(c, 4, 256, vec![0; 512], vec![0x38; 63], 1.0).is_err());
    assert!(Nvfp4::from_parts(c, 4, 250, vec![0; 500], vec![0x38; 62], 1.0).is_err());
    assert!(Nvfp4::from_parts(c, 4, 256, vec![0; 512], vec![0x38; 64], 0.0).is_err());
    assert!(Nvfp4::from_parts(Nvfp4Convention::ModelOpt, 4, 256, vec![0; 512], vec![0x38; 64], f32::NAN).is_err());
    assert!(Mxfp4::from_parts(4, 256, vec![0; 512], vec![127; 31]).is_err());
    assert!(Mxfp4::from_parts(4, 48, vec![0; 96], vec![127; 6]).is_err());
    assert!(Fp8Weight::from_parts(Fp8Scaling::DEEPSEEK_BLOCK, 130, 136, vec![0; 130 * 136], vec![1.0; 3]).is_err());
    assert!(
        Fp8Weight::from_parts(Fp8Scaling::PerChannel, 4, 8, vec![0; 32], vec![1.0, 1.0, 1.0, f32::INFINITY]).is_err()
    );
    assert!(Int8::from_parts(4, 8, vec![0; 32], vec![1.0; 3]).is_err());
    assert!(Int4::from_parts(4, 64, 32, vec![0; 128], vec![1.0; 8], Some(vec![0; 7])).is_err());
    assert!(Int4::from_parts(4, 64, 32, vec![0; 128], vec![1.0; 8], Some(vec![9; 8])).is_err());
    assert!(Int4::from_parts(4, 64, 32, vec![0; 127], vec![1.0; 8], None).is_err());
    assert!(unpack_ct_zero_points(&[0; 12], 9, 2).is_err());
    assert!(Nvfp4::from_parts(c, usize::MAX, 32, vec![0; 16], vec![0x38; 2], 1.0).is_err(), "overflow");
    assert!(Mxfp4::from_parts(usize::MAX, 64, vec![0; 32], vec![127; 2]).is_err(), "overflow");
    assert!(Int4::from_parts(usize::MAX, 64, 32, vec![0; 32], vec![1.0; 2], None).is_err(), "overflow");
    assert!(Fp8Weight::from_parts(Fp8Scaling::PerTensor, usize::MAX, 2, vec![0; 2], vec![1.0]).is_err(), "overflow");
    assert!(Int8::from_parts(usize::MAX, 2, vec![0; 2], vec![1.0]).is_err(), "overflow");

    // gpt-oss tensors whose shapes do not fit.
    let blocks = vec![0u8; 2 * 4 * 2 * 16];
    let scales = vec![127u8; 2 * 4 * 2];
    assert!(Mxfp4::from_gpt_oss(&blocks, &[2, 4, 2, 16], &scales, &[2, 4, 2], 1).is_ok());
    assert!(Mxfp4::from_gpt_oss(&blocks, &[2, 4, 2, 16], &scales, &[2, 4, 2], 2).is_err(), "expert out of range");
    assert!(Mxfp4::from_gpt_oss(&blocks, &[2, 4, 4, 8], &scales, &[2, 4, 4], 0).is_err(), "last dim not 16");
    assert!(Mxfp4::from_gpt_oss(&blocks, &[2, 4, 2, 16], &scales, &[2, 4, 3], 0).is_err(), "scales shape");
    assert!(Mxfp4::from_gpt_oss(&blocks, &[4, 4, 2, 16], &scales, &[4, 4, 2], 0).is_err(), "too few bytes");
    assert!(Mxfp4::from_gpt_oss(&blocks, &[16], &scales, &[], 0).is_err(), "rank");
    assert!(
        Mxfp4::from_gpt_oss(&blocks, &[usize::MAX, 4, 2, 16], &scales, &[usize::MAX, 4, 2], 0).is_err(),
        "overflow"
    );
    // Without an expert dimension.
    assert!(Mxfp4::from_gpt_oss(&blocks[..128], &[4, 2, 16], &scales[..8], &[4, 2], 0).is_ok());
}

#[test]
fn mxfp4_nan_scale_and_fp8_float_bytes() {
    // E8M0 0xFF is NaN for its whole block (OCP), other blocks unaffected.
    let mut scales = vec![127u8; 2];
    scales[1] = 0xFF;
    let m = Mxfp4::from_parts(1, 64, vec![0x21; 32], scales).unwrap();
    let d = m.dequantize();
    assert!(d[..32].iter().all(|v| *v == 1.0 || *v == 0.5));
    assert!(d[32..].iter().all(|v| v.is_nan()));
    // A stored FP8 NaN byte dequantizes to NaN (not a panic).
    let q = Fp8Weight::from_parts(Fp8Scaling::PerTensor, 1, 2, vec![0x7F, 0x38], vec![2.0]).unwrap();
    let d = q.dequantize();
    assert!(d[0].is_nan() && d[1] == 2.0);
    // Stored per-tensor scale as f32 LE, read back the way a loader would.
    assert_eq!(f32_le(&[1.5]), 1.5f32.to_le_bytes().to_vec());
}

/// The size a format promises before quantizing (memory estimates use it)
/// is what the quantizer then makes, for every format and option.
#[test]
fn storage_bytes_before_quantizing_equal_the_quantized_matrix() {
    let (rows, cols) = (136, 384); // rows not a multiple of FP8's 128-row blocks
    let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0).collect();
    for name in [
        "nvfp4",
        "nvfp4:ct",
        "mxfp4",
        "mxfp4:ct",
        "fp8",
        "fp8:channel",
        "fp8:block",
        "int8",
        "int8:modelopt",
        "int4",
        "int4:g64",
        "int4:g32:asym",
    ] {
        let format: QuantFormat = name.parse().unwrap();
        let m = QuantizedMatrix::quantize(format, &w, rows, cols).unwrap();
        assert_eq!(format.storage_bytes(rows, cols), m.storage_bytes(), "{name}");
    }
    for ty in ferrum_engine::quant::ggml::PACKED_TYPES {
        let bytes = ty.bytes_for(rows * 256).unwrap();
        let m = ferrum_engine::quant::ggml::GgmlBlocks::new(ty, rows, 256, vec![0u8; bytes].into()).unwrap();
        assert_eq!(QuantFormat::Ggml(ty).storage_bytes(rows, 256), m.storage_bytes(), "{ty}");
    }
}
