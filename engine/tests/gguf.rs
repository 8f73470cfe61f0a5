//! The GGUF reader and dequantizers against llama.cpp's own `gguf` Python
//! package (files under `tests/data/gguf/`, built by
//! `tools/fixtures/make_gguf_fixtures.py`), plus malformed files built here,
//! each of which must give an `Err` that names the problem, never a panic.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ferrum_engine::loader::SafetensorsFile;
use ferrum_engine::loader::StDtype;
use ferrum_engine::loader::gguf::{GgmlType, GgufFile, MetaArray, MetaValue, dequantize};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf").join(name)
}

fn open_fixture() -> GgufFile {
    GgufFile::open(&data("quants.gguf")).expect("quants.gguf opens")
}

/// Writes `bytes` to a fresh temporary file, opens it, removes it.
fn open_bytes(bytes: &[u8]) -> ferrum_engine::error::Result<GgufFile> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "ferrum-gguf-{}-{}.gguf",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, bytes).expect("temp file written");
    let result = GgufFile::open(&path);
    let _ = std::fs::remove_file(&path);
    result
}

/// Asserts that `bytes` fail to open with a message containing every needle.
fn expect_err(bytes: &[u8], needles: &[&str]) {
    match open_bytes(bytes) {
        Ok(_) => panic!("expected an error mentioning {needles:?}, but the file opened"),
        Err(e) => {
            let msg = e.to_string();
            println!("{msg}");
            for needle in needles {
                assert!(msg.contains(needle), "error {msg:?} does not mention {needle:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Against the gguf package
// ---------------------------------------------------------------------------

/// Every tensor of quants.gguf dequantizes to exactly the f32 bits
/// `gguf.quants.dequantize` produced (quants.ref.safetensors).
#[test]
fn every_type_matches_the_gguf_package_bit_for_bit() {
    let file = open_fixture();
    let reference = SafetensorsFile::open(&data("quants.ref.safetensors")).expect("reference opens");
    let mut covered = std::collections::BTreeSet::new();
    for info in file.tensors() {
        let entry = &reference.tensors[&info.name];
        assert_eq!(entry.dtype, StDtype::F32, "{}", info.name);
        assert_eq!(entry.shape, info.shape, "{}: row-major shape", info.name);
        let want: Vec<u32> =
            reference.bytes(entry).chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).collect();
        let got = file.dequantize(info).expect("dequantizes");
        assert_eq!(got.len(), want.len(), "{}", info.name);
        let mismatches: Vec<usize> = (0..got.len()).filter(|&i| got[i].to_bits() != want[i]).collect();
        if let Some(&i) = mismatches.first() {
            panic!(
                "{} ({}): {} of {} values differ; first at {i}: ours {:e} ({:#010x}), gguf {:e} ({:#010x})",
                info.name,
                info.ggml_type,
                mismatches.len(),
                got.len(),
                got[i],
                got[i].to_bits(),
                f32::from_bits(want[i]),
                want[i]
            );
        }
        println!(
            "{:<13} {:<5} shape {:?}: {} values bit-exact",
            info.name,
            info.ggml_type.name(),
            info.shape,
            got.len()
        );
        covered.insert(info.ggml_type.name());
    }
    use GgmlType::*;
    for ty in [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, MXFP4] {
        assert!(covered.contains(ty.name()), "no fixture tensor of type {ty}");
        assert!(ty.can_dequantize());
    }
}

#[test]
fn header_and_tensor_infos_match_what_the_package_wrote() {
    let file = open_fixture();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.data_offset(), 3104, "gguf.GGUFReader's data_offset");
    let names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 21);
    assert_eq!(names[..3], ["f32.quant", "f16.quant", "bf16.quant"]);
    assert_eq!(names[20], "shape3d");
    for t in file.tensors() {
        assert_eq!(t.offset % 32, 0, "{}", t.name);
        assert_eq!(t.range.start, file.data_offset() + t.offset as usize);
        if t.name != "shape3d" {
            assert_eq!((t.dims.as_slice(), t.shape.as_slice()), (&[512, 2][..], &[2, 512][..]));
        }
    }
    let q4k = file.tensor("q4_k.random").unwrap();
    assert_eq!((q4k.ggml_type, q4k.n_elements, q4k.range.len()), (GgmlType::Q4_K, 1024, 4 * 144));
    assert_eq!(q4k.range.start, 20736, "the data_offset GGUFReader reports");
    let s = file.tensor("shape3d").unwrap();
    assert_eq!((s.dims.as_slice(), s.shape.as_slice()), (&[64, 2, 3][..], &[3, 2, 64][..]));
    // F32 data is stored as is.
    let f32t = file.tensor("f32.quant").unwrap();
    let reference = SafetensorsFile::open(&data("quants.ref.safetensors")).unwrap();
    assert_eq!(file.tensor_bytes(f32t), reference.bytes(&reference.tensors["f32.quant"]));
    assert!(file.tensor("nope").is_none());
}

#[test]
fn metadata_of_every_type_round_trips() {
    let f = open_fixture();
    assert_eq!(f.metadata_entries().count(), 44);
    let m = |k: &str| f.metadata(k).unwrap_or_else(|| panic!("{k} missing")).clone();
    assert_eq!(m("test.u8"), MetaValue::U8(200));
    assert_eq!(m("test.i8"), MetaValue::I8(-100));
    assert_eq!(m("test.u16"), MetaValue::U16(60000));
    assert_eq!(m("test.i16"), MetaValue::I16(-30000));
    assert_eq!(m("test.u32"), MetaValue::U32(4_000_000_000));
    assert_eq!(m("test.i32"), MetaValue::I32(-2_000_000_000));
    assert_eq!(m("test.u64"), MetaValue::U64((1 << 60) + 1));
    assert_eq!(m("test.i64"), MetaValue::I64(-(1 << 60)));
    assert_eq!(m("test.f32"), MetaValue::F32(0.3));
    assert_eq!(m("test.f64"), MetaValue::F64(1234.5678901234567));
    assert_eq!(m("test.bool_true"), MetaValue::Bool(true));
    assert_eq!(m("test.bool_false"), MetaValue::Bool(false));
    assert_eq!(m("test.string"), MetaValue::String("héllo wörld ✓".into()));
    assert_eq!(m("test.empty_string"), MetaValue::String(String::new()));
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(m("test.str_array"), MetaValue::Array(MetaArray::String(strings(&["alpha", "", "γάμμα", "<0x0A>"]))));
    assert_eq!(m("test.i32_array"), MetaValue::Array(MetaArray::I32(vec![1, -2, 3])));
    assert_eq!(m("test.u8_array"), MetaValue::Array(MetaArray::U8(vec![0, 7, 255])));
    assert_eq!(m("test.i64_array"), MetaValue::Array(MetaArray::I64(vec![-(1 << 40), 1 << 40])));
    assert_eq!(m("test.f32_array"), MetaValue::Array(MetaArray::F32(vec![0.5, -1.25, 1e-3])));
    assert_eq!(m("test.f64_array"), MetaValue::Array(MetaArray::F64(vec![0.1, -2.5])));
    assert_eq!(m("test.bool_array"), MetaValue::Array(MetaArray::Bool(vec![true, false, true])));
    assert_eq!(
        m("test.nested"),
        MetaValue::Array(MetaArray::Array(vec![
            MetaArray::I32(vec![1, 2]),
            MetaArray::I32(vec![3]),
            MetaArray::I32(vec![4, 5, 6]),
        ]))
    );
    assert_eq!(
        m("test.nested_str"),
        MetaValue::Array(MetaArray::Array(vec![
            MetaArray::String(strings(&["x", "y"])),
            MetaArray::String(strings(&["z"])),
        ]))
    );
    assert_eq!(
        m("test.nested2"),
        MetaValue::Array(MetaArray::Array(vec![
            MetaArray::Array(vec![MetaArray::F32(vec![1.5]), MetaArray::F32(vec![2.5, 3.5])]),
            MetaArray::Array(vec![MetaArray::F32(vec![4.5])]),
        ]))
    );

    // The typed helpers, on the keys a llama conversion writes.
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 2);
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 64);
    assert_eq!(f.get_u32("llama.context_length").unwrap(), 256);
    assert_eq!(f.get_u32("llama.feed_forward_length").unwrap(), 128);
    assert_eq!(f.get_u32("llama.attention.head_count").unwrap(), 4);
    assert_eq!(f.get_u32("llama.attention.head_count_kv").unwrap(), 2);
    assert_eq!(f.get_u32("llama.rope.dimension_count").unwrap(), 16);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(), 1e-6);
    assert_eq!(f.get_f64("llama.attention.layer_norm_rms_epsilon").unwrap(), 1e-6f32 as f64);
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(f.get_str_array("tokenizer.ggml.tokens").unwrap(), strings(&["<s>", "</s>", "a", "b", "ab"]));
    assert_eq!(f.get_i32_array("tokenizer.ggml.token_type").unwrap(), [3, 3, 1, 1, 1]);
    assert_eq!(f.get_str_array("tokenizer.ggml.merges").unwrap(), ["a b"]);
    assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 1);
    assert_eq!(f.get_str("tokenizer.chat_template").unwrap(), "{{ messages[0]['content'] }}");
    assert_eq!(f.get_f32_array("test.f32_array").unwrap(), [0.5, -1.25, 1e-3]);
    assert!(f.get_bool("test.bool_true").unwrap());
    assert_eq!(f.get_array("test.nested").unwrap().len(), 3);
    // Integers widen or narrow when the value fits.
    assert_eq!(f.get_u64("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_i32("test.u16").unwrap(), 60000);
    assert_eq!(f.get::<u8>("test.u8").unwrap(), 200);
    assert_eq!(f.get_opt::<u32>("no.such.key").unwrap(), None);
    assert_eq!(f.get_opt::<u32>("llama.block_count").unwrap(), Some(2));

    let msg = err_msg(f.get_u32("no.such.key"));
    assert!(msg.contains("\"no.such.key\" is missing"), "{msg}");
    let msg = err_msg(f.get_u32("test.string"));
    assert!(msg.contains("holds string \"héllo wörld ✓\", expected u32"), "{msg}");
    let msg = err_msg(f.get_u32("test.u64"));
    assert!(msg.contains("holds u64 1152921504606846977, expected u32"), "{msg}");
    let msg = err_msg(f.get_u32("test.i8"));
    assert!(msg.contains("holds i8 -100, expected u32"), "{msg}");
    let msg = err_msg(f.get_f32("test.f64"));
    assert!(msg.contains("holds f64 1234.5678901234567, expected f32"), "{msg}");
    let msg = err_msg(f.get_str_array("test.i32_array"));
    assert!(msg.contains("holds array[i32; 3], expected string array"), "{msg}");
}

fn err_msg<T: std::fmt::Debug>(r: ferrum_engine::error::Result<T>) -> String {
    let msg = r.unwrap_err().to_string();
    println!("{msg}");
    msg
}

#[test]
fn custom_alignment_64() {
    let f = GgufFile::open(&data("align64.gguf")).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.get_u32("general.alignment").unwrap(), 64);
    let a = f.tensor("a").unwrap();
    let b = f.tensor("b").unwrap();
    assert_eq!((a.offset, b.offset), (0, 64));
    assert_eq!(f.dequantize(a).unwrap(), [0.0, 1.0, 2.0]);
    assert_eq!(b.shape, [2, 5]);
    assert_eq!(f.dequantize(b).unwrap(), (10..20).map(|v| v as f32).collect::<Vec<_>>());
}

#[test]
fn version_2_reads_like_version_3() {
    let mut bytes = std::fs::read(data("quants.gguf")).unwrap();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let v2 = open_bytes(&bytes).expect("a version-2 file opens");
    let v3 = open_fixture();
    assert_eq!(v2.version(), 2);
    assert_eq!(v2.tensors(), v3.tensors());
    assert_eq!(v2.metadata_entries().count(), v3.metadata_entries().count());
}

// ---------------------------------------------------------------------------
// Malformed files
// ---------------------------------------------------------------------------

fn gstr(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

const T_U32: u32 = 4;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const GGML_F32: u32 = 0;
const GGML_Q4_0: u32 = 2;

/// Assembles a GGUF file piece by piece, so each test can break one piece.
#[derive(Clone)]
struct Builder {
    magic: [u8; 4],
    version: u32,
    kvs: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    alignment: usize,
    data: Vec<u8>,
}

impl Builder {
    /// A valid file: one metadata key, one F32 tensor of dims [32, 2].
    fn valid() -> Self {
        Builder {
            magic: *b"GGUF",
            version: 3,
            kvs: Vec::new(),
            n_kv: 0,
            infos: Vec::new(),
            n_tensors: 0,
            alignment: 32,
            data: Vec::new(),
        }
        .kv(b"general.architecture", T_STRING, &gstr(b"llama"))
        .tensor(b"t", &[32, 2], GGML_F32, 0)
        .data(&[0u8; 256])
    }

    fn kv(mut self, key: &[u8], ty: u32, payload: &[u8]) -> Self {
        self.kvs.extend(gstr(key));
        self.kvs.extend(ty.to_le_bytes());
        self.kvs.extend_from_slice(payload);
        self.n_kv += 1;
        self
    }

    fn tensor(mut self, name: &[u8], dims: &[u64], ty: u32, offset: u64) -> Self {
        self.infos.extend(gstr(name));
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }

    fn data(mut self, bytes: &[u8]) -> Self {
        self.data.extend_from_slice(bytes);
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut out = self.magic.to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kvs);
        out.extend(&self.infos);
        while !out.len().is_multiple_of(self.alignment) {
            out.push(0);
        }
        out.extend(&self.data);
        out
    }
}

fn array_payload(elem_ty: u32, count: u64, elems: &[u8]) -> Vec<u8> {
    let mut v = elem_ty.to_le_bytes().to_vec();
    v.extend(count.to_le_bytes());
    v.extend_from_slice(elems);
    v
}

#[test]
fn the_builder_makes_valid_files() {
    let f = open_bytes(&Builder::valid().build()).expect("valid file opens");
    assert_eq!(f.tensors().len(), 1);
    assert_eq!(f.dequantize(&f.tensors()[0]).unwrap(), vec![0.0; 64]);
    // Empty arrays are legal (the gguf package cannot write them).
    let f = open_bytes(&Builder::valid().kv(b"empty", T_ARRAY, &array_payload(T_STRING, 0, &[])).build()).unwrap();
    assert!(f.get_array("empty").unwrap().is_empty());
    assert_eq!(f.get_str_array("empty").unwrap().len(), 0);
}

#[test]
fn bad_magic() {
    let mut b = Builder::valid();
    b.magic = *b"GGML";
    expect_err(&b.build(), &["malformed GGUF", "bad magic \"GGML\"", "expected \"GGUF\""]);
    expect_err(b"GG", &["bad magic"]);
    expect_err(b"", &["bad magic"]);
}

#[test]
fn unsupported_versions() {
    for (version, needle) in
        [(1, "version 1 is not supported"), (4, "unsupported GGUF version 4"), (0x0300_0000, "big-endian")]
    {
        let mut b = Builder::valid();
        b.version = version;
        expect_err(&b.build(), &[needle]);
    }
}

/// Every prefix of a valid file is an error, never a panic.
#[test]
fn truncated_files() {
    let full =
        Builder::valid().kv(b"list", T_ARRAY, &array_payload(T_STRING, 2, &[gstr(b"ab"), gstr(b"c")].concat())).build();
    for len in 0..full.len() {
        match open_bytes(&full[..len]) {
            Ok(_) => panic!("a {len}-byte prefix of a {}-byte file opened", full.len()),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    ["truncated", "past the end", "bad magic", "cannot fit", "only 0 remain", "needs at least"]
                        .iter()
                        .any(|n| msg.contains(n)),
                    "prefix {len}: {msg}"
                );
            }
        }
    }
    expect_err(&full[..30], &["2 metadata entries cannot fit in the 6 bytes after the header"]);
    expect_err(&full[..60], &["truncated"]);
    expect_err(&full[..full.len() - 1], &["run past the end of the file"]);
    // The real fixture, cut in its metadata, its tensor infos and its data.
    let fixture = std::fs::read(data("quants.gguf")).unwrap();
    for len in [24, 100, 1000, 2500, 3000, 3104, 20000, fixture.len() - 1] {
        assert!(open_bytes(&fixture[..len]).is_err(), "{len}-byte prefix opened");
    }
}

#[test]
fn tensor_past_the_end() {
    let b = Builder::valid().tensor(b"u", &[32], GGML_F32, 256);
    expect_err(&b.build(), &["tensor \"u\"", "128 bytes of F32", "run past the end of the file"]);
    let b = Builder::valid().tensor(b"u", &[32], GGML_F32, u64::MAX - 31);
    expect_err(&b.build(), &["tensor \"u\"", "overflows"]);
}

#[test]
fn string_length_overflowing() {
    // A key whose length is absurd: refused before anything is allocated.
    let mut b = Builder::valid();
    b.kvs.extend(u64::MAX.to_le_bytes());
    b.n_kv += 1;
    expect_err(&b.build(), &["metadata entry 1", "string length 18446744073709551615", "runs past the end"]);
    // A string value one byte longer than the file.
    let b = Builder::valid().kv(b"s", T_STRING, &1_000_000u64.to_le_bytes());
    expect_err(&b.build(), &["metadata key \"s\"", "string length 1000000", "runs past the end"]);
    // A tensor name.
    let mut b = Builder::valid();
    b.infos.extend((1u64 << 40).to_le_bytes());
    b.n_tensors += 1;
    expect_err(&b.build(), &["tensor info 1 of 2", "string length 1099511627776"]);
}

#[test]
fn huge_array_count() {
    let b = Builder::valid().kv(b"a", T_ARRAY, &array_payload(T_U32, 1 << 62, &[0; 16]));
    expect_err(&b.build(), &["metadata key \"a\"", "array of 4611686018427387904 u32", "needs at least"]);
    // count * element size overflows u64
    let b = Builder::valid().kv(b"a", T_ARRAY, &array_payload(T_U64, u64::MAX, &[]));
    expect_err(&b.build(), &["array of 18446744073709551615 u64"]);
    // strings: each needs at least its 8-byte length
    let b = Builder::valid().kv(b"a", T_ARRAY, &array_payload(T_STRING, 1_000_000, &gstr(b"x")));
    expect_err(&b.build(), &["array of 1000000 string"]);
}

#[test]
fn huge_counts_in_the_header() {
    let mut b = Builder::valid();
    b.n_kv = u64::MAX;
    expect_err(&b.build(), &["18446744073709551615 metadata entries cannot fit"]);
    let mut b = Builder::valid();
    b.n_tensors = 1 << 40;
    expect_err(&b.build(), &["1099511627776 tensors cannot fit"]);
}

#[test]
fn unknown_types() {
    let b = Builder::valid().tensor(b"u", &[32], 99, 256).data(&[0; 128]);
    expect_err(&b.build(), &["tensor \"u\"", "unknown ggml type 99"]);
    let b = Builder::valid().tensor(b"u", &[32], 4, 256).data(&[0; 128]); // removed Q4_2
    expect_err(&b.build(), &["unknown ggml type 4"]);
    let b = Builder::valid().kv(b"k", 13, &[0; 8]);
    expect_err(&b.build(), &["metadata key \"k\"", "unknown value type 13"]);
    let b = Builder::valid().kv(b"k", T_ARRAY, &array_payload(42, 1, &[0; 8]));
    expect_err(&b.build(), &["unknown array element type 42"]);
}

#[test]
fn misaligned_and_partial_blocks() {
    let b = Builder::valid().tensor(b"u", &[4], GGML_F32, 272).data(&[0; 32]);
    expect_err(&b.build(), &["tensor \"u\"", "data offset 272 is not a multiple of the alignment 32"]);
    let b = Builder::valid().tensor(b"q", &[48, 2], GGML_Q4_0, 256).data(&[0; 64]);
    expect_err(&b.build(), &["tensor \"q\"", "row length 48 (dims[0]) is not a whole number of Q4_0 blocks of 32"]);
    // A block-aligned row is fine, whatever the outer dims.
    let b = Builder::valid().tensor(b"q", &[64, 3], GGML_Q4_0, 256).data(&[0; 6 * 18]);
    let f = open_bytes(&b.build()).unwrap();
    assert_eq!(f.tensor("q").unwrap().range.len(), 6 * 18);
}

#[test]
fn bad_alignment_key() {
    let b = Builder::valid().kv(b"general.alignment", T_U32, &48u32.to_le_bytes());
    expect_err(&b.build(), &["general.alignment 48 is not a power of two"]);
    let b = Builder::valid().kv(b"general.alignment", T_U32, &0u32.to_le_bytes());
    expect_err(&b.build(), &["general.alignment 0 is not a power of two"]);
    let b = Builder::valid().kv(b"general.alignment", T_U64, &64u64.to_le_bytes());
    expect_err(&b.build(), &["general.alignment is u64 64, expected u32"]);
}

#[test]
fn duplicates_and_overlaps() {
    let b = Builder::valid().kv(b"general.architecture", T_STRING, &gstr(b"x"));
    expect_err(&b.build(), &["metadata key \"general.architecture\" appears twice"]);
    let b = Builder::valid().tensor(b"t", &[32], GGML_F32, 256).data(&[0; 128]);
    expect_err(&b.build(), &["tensor \"t\" appears twice"]);
    let b = Builder::valid().tensor(b"u", &[32], GGML_F32, 128);
    expect_err(&b.build(), &["tensors \"t\" and \"u\" overlap"]);
}

#[test]
fn bad_values_and_shapes() {
    let b = Builder::valid().kv(b"flag", T_BOOL, &[2]);
    expect_err(&b.build(), &["metadata key \"flag\"", "bool at offset", "is 2, neither 0 nor 1"]);
    let b = Builder::valid().kv(b"s", T_STRING, &gstr(&[0x66, 0xff, 0x67]));
    expect_err(&b.build(), &["metadata key \"s\"", "not valid UTF-8"]);
    let b = Builder::valid().kv(&[0xc3, 0x28], T_U32, &[0; 4]);
    expect_err(&b.build(), &["metadata entry 1 of 2", "not valid UTF-8"]);
    // Nine levels of arrays around one u32.
    let mut payload = array_payload(T_U32, 1, &7u32.to_le_bytes());
    for _ in 0..8 {
        payload = array_payload(T_ARRAY, 1, &payload);
    }
    expect_err(&Builder::valid().kv(b"deep", T_ARRAY, &payload).build(), &["nested more than 8 deep"]);
    // Eight levels are fine.
    let mut payload = array_payload(T_U32, 1, &7u32.to_le_bytes());
    for _ in 0..7 {
        payload = array_payload(T_ARRAY, 1, &payload);
    }
    assert!(open_bytes(&Builder::valid().kv(b"deep", T_ARRAY, &payload).build()).is_ok());
    let b = Builder::valid().tensor(b"u", &[1, 1, 1, 1, 1], GGML_F32, 256);
    expect_err(&b.build(), &["tensor \"u\"", "5 dimensions, ggml allows at most 4"]);
    let b = Builder::valid().tensor(b"u", &[1 << 40, 1 << 40], GGML_F32, 256);
    expect_err(&b.build(), &["tensor \"u\"", "overflow"]);
    let b = Builder::valid().tensor(b"u", &[1 << 63], GGML_F32, 256);
    expect_err(&b.build(), &["tensor \"u\"", "dimension 9223372036854775808 is too large"]);
}

/// Flipping bytes of a small valid file never panics the reader or the
/// dequantizers (deterministic xorshift, 3000 mutants).
#[test]
fn random_corruption_never_panics() {
    let base = Builder::valid()
        .kv(b"list", T_ARRAY, &array_payload(T_STRING, 2, &[gstr(b"ab"), gstr(b"c")].concat()))
        .kv(b"n", T_ARRAY, &array_payload(T_ARRAY, 1, &array_payload(T_U32, 1, &[1, 0, 0, 0])))
        .tensor(b"q", &[64, 2], GGML_Q4_0, 256)
        .data(&[0x11; 4 * 18])
        .build();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut opened, mut refused) = (0, 0);
    for _ in 0..3000 {
        let mut bytes = base.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        match open_bytes(&bytes) {
            Ok(f) => {
                opened += 1;
                for t in f.tensors() {
                    let _ = f.dequantize(t);
                }
            }
            Err(e) => {
                refused += 1;
                assert!(e.to_string().contains("malformed GGUF"), "{e}");
            }
        }
    }
    println!("{opened} mutants opened, {refused} refused");
    assert!(refused > 0 && opened > 0);
}

// ---------------------------------------------------------------------------
// dequantize() on its own
// ---------------------------------------------------------------------------

#[test]
fn dequantize_checks_sizes_and_types() {
    let msg = dequantize(GgmlType::Q4_0, &[0; 18], 33).unwrap_err().to_string();
    assert!(msg.contains("33 elements are not a whole number of Q4_0 blocks of 32"), "{msg}");
    let msg = dequantize(GgmlType::Q4_0, &[0; 17], 32).unwrap_err().to_string();
    assert!(msg.contains("32 Q4_0 elements take 18 bytes, got 17"), "{msg}");
    let msg = dequantize(GgmlType::IQ2_XXS, &[0; 66], 256).unwrap_err().to_string();
    assert!(msg.contains("IQ2_XXS is not supported"), "{msg}");
    assert!(!GgmlType::IQ2_XXS.can_dequantize());
    assert_eq!(dequantize(GgmlType::Q8_0, &[], 0).unwrap(), Vec::<f32>::new());
    // Q8_0 by hand: d = 0.5 (f16 0x3800), quants 0..32.
    let mut block = vec![0x00, 0x38];
    block.extend((0..32).map(|q: i8| (q - 16) as u8));
    let y = dequantize(GgmlType::Q8_0, &block, 32).unwrap();
    assert_eq!(y[0], -8.0);
    assert_eq!(y[31], 7.5);
    // MXFP4 by hand: e = 128 (scale 2), codes 0..16 in the low nibbles, 7 (6.0) in the high.
    let mut block = vec![128u8];
    block.extend((0..16).map(|c| c | 0x70));
    let y = dequantize(GgmlType::MXFP4, &block, 32).unwrap();
    let e2m1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];
    for j in 0..16 {
        assert_eq!(y[j], 2.0 * e2m1[j], "element {j}");
        assert_eq!(y[j + 16], 12.0, "element {}", j + 16);
    }
}

#[test]
fn ggml_type_table() {
    for id in 0..64 {
        if let Some(ty) = GgmlType::from_id(id) {
            assert_eq!(ty.id(), id);
            assert!(ty.block_size() > 0 && ty.type_size() > 0);
        }
    }
    assert_eq!(GgmlType::from_id(39), Some(GgmlType::MXFP4));
    assert_eq!((GgmlType::Q6_K.block_size(), GgmlType::Q6_K.type_size()), (256, 210));
    assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
    assert_eq!(GgmlType::Q4_K.bytes_for(100), None);
    for removed in [4, 5, 31, 32, 33, 36, 37, 38] {
        assert_eq!(GgmlType::from_id(removed), None);
    }
}
