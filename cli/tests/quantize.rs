//! `ferrum quantize` writes a ModelOpt-layout checkpoint that Ferrum reloads
//! with logits identical to quantizing on load; corrupt ones are clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ferrum(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrum")).args(args).output().unwrap()
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama")
}

fn logits(model: &Path, extra: &[&str], tag: &str) -> Vec<u8> {
    let out_file = std::env::temp_dir().join(format!("ferrum-q-{tag}-{}.safetensors", std::process::id()));
    let mut args = vec!["logits", "--model", model.to_str().unwrap(), "--tokens", "0,5,9,44,300,7,7,12", "--out"];
    args.push(out_file.to_str().unwrap());
    args.extend(extra);
    let out = ferrum(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&out_file).unwrap();
    let _ = std::fs::remove_file(out_file);
    bytes
}

fn header(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

fn rewrite_header(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut h);
    let text = serde_json::to_vec(&h).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn nvfp4_and_fp8_checkpoints_round_trip_and_corruption_is_named() {
    for (format, algo) in [("nvfp4", "NVFP4"), ("fp8", "FP8")] {
        let out = std::env::temp_dir().join(format!("ferrum-quantized-{format}-{}", std::process::id()));
        let run = ferrum(&[
            "quantize",
            "--model",
            fixture().to_str().unwrap(),
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

        // the layout vLLM and TensorRT-LLM load
        let h = header(&out.join("model.safetensors"));
        let q = "model.layers.0.self_attn.q_proj";
        if format == "nvfp4" {
            assert_eq!(h[format!("{q}.weight")]["dtype"], "U8");
            assert_eq!(h[format!("{q}.weight")]["shape"], serde_json::json!([64, 32]));
            assert_eq!(h[format!("{q}.weight_scale")]["dtype"], "F8_E4M3");
            assert_eq!(h[format!("{q}.weight_scale")]["shape"], serde_json::json!([64, 4]));
            assert_eq!(h[format!("{q}.weight_scale_2")]["dtype"], "F32");
        } else {
            assert_eq!(h[format!("{q}.weight")]["dtype"], "F8_E4M3");
            assert_eq!(h[format!("{q}.weight_scale")]["dtype"], "F32");
        }
        assert_eq!(h["lm_head.weight"]["dtype"], "F32", "lm_head stays unquantized");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["quantization_config"]["quant_method"], "modelopt");
        assert_eq!(config["quantization_config"]["quant_algo"], algo);
        let hf: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("hf_quant_config.json")).unwrap()).unwrap();
        assert_eq!(hf["quantization"]["quant_algo"], algo);

        // reloads with exactly the logits of quantizing on load
        assert_eq!(logits(&out, &[], format), logits(&fixture(), &["--quant", format], &format!("{format}-live")));

        // a missing scale and a scale of the wrong shape are named errors
        let st = out.join("model.safetensors");
        let pristine = std::fs::read(&st).unwrap();
        let scale = if format == "nvfp4" { "weight_scale_2" } else { "weight_scale" };
        rewrite_header(&st, |h| {
            let v = h.as_object_mut().unwrap().remove(&format!("{q}.{scale}")).unwrap();
            h[format!("{q}.renamed")] = v;
        });
        let bad = ferrum(&["logits", "--model", out.to_str().unwrap(), "--tokens", "1,2", "--out", "/dev/null"]);
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(1), "{err}");
        assert!(err.contains(scale) && !err.contains("panicked"), "{err}");
        if format == "nvfp4" {
            std::fs::write(&st, &pristine).unwrap();
            rewrite_header(&st, |h| h[format!("{q}.weight_scale")]["shape"] = serde_json::json!([32, 8]));
            let bad = ferrum(&["logits", "--model", out.to_str().unwrap(), "--tokens", "1,2", "--out", "/dev/null"]);
            let err = String::from_utf8_lossy(&bad.stderr);
            assert!(bad.status.code() == Some(1) && err.contains("weight_scale") && err.contains("shape"), "{err}");
        }
        let _ = std::fs::remove_dir_all(&out);
    }
}

/// DeepSeek-V3's layout (`nvidia/DeepSeek-R1-FP4`): every expert its own
/// tensor, with its own tensor scale; quantizing on load does the same. With
/// attention left as it is (as R1-FP4 leaves it) and quantized too (the
/// latent projections are then cut and transposed as they load).
#[test]
fn experts_are_quantized_one_at_a_time_as_modelopt_does() {
    let moe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/deepseek-v3");
    let cases = [
        ("nvfp4", "weight_scale_2", "self_attn"),
        ("fp8", "weight_scale", "self_attn"),
        ("nvfp4", "weight_scale_2", "none"),
    ];
    for (format, tensor_scale, exclude) in cases {
        let tag = format!("moe-{format}-{exclude}");
        let out = std::env::temp_dir().join(format!("ferrum-quantized-{tag}-{}", std::process::id()));
        let (model, dir) = (moe.to_str().unwrap(), out.to_str().unwrap());
        let run = ferrum(&["quantize", "--model", model, "--format", format, "--out", dir, "--quant-exclude", exclude]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let st = out.join("model.safetensors");
        let scale_of = |e: usize| {
            let name = format!("model.layers.1.mlp.experts.{e}.gate_proj.{tensor_scale}");
            let h = header(&st);
            let [start, _] = [0, 1].map(|i| h[&name]["data_offsets"][i].as_u64().unwrap() as usize);
            let bytes = std::fs::read(&st).unwrap();
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            f32::from_le_bytes(bytes[8 + n + start..][..4].try_into().unwrap())
        };
        assert_ne!(scale_of(0), scale_of(1), "{format}: each expert has its own scale");
        let on_load = ["--quant", format, "--quant-exclude", exclude];
        assert_eq!(logits(&out, &[], &tag), logits(&moe, &on_load, &format!("{tag}-live")), "{tag}");
        let _ = std::fs::remove_dir_all(&out);
    }
}

/// Every mixture-of-experts layout quantizes to a checkpoint that loads:
/// routers stay as they are under any name (Mixtral's `block_sparse_moe.gate`,
/// gpt-oss's `mlp.router`), fused 3-D experts are copied as stored.
#[test]
fn every_moe_layout_quantizes_to_a_checkpoint_that_loads() {
    for name in ["mixtral", "gpt-oss", "qwen3-moe-norm", "deepseek-v32"] {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name);
        let out = std::env::temp_dir().join(format!("ferrum-quantized-layout-{name}-{}", std::process::id()));
        let run = ferrum(&[
            "quantize",
            "--model",
            model.to_str().unwrap(),
            "--format",
            "nvfp4",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{name}: {}", String::from_utf8_lossy(&run.stderr));
        let h = header(&out.join("model.safetensors"));
        let routers =
            h.as_object().unwrap().keys().filter(|k| k.contains(".gate.weight") || k.contains(".router.weight"));
        for router in routers.collect::<Vec<_>>() {
            assert_eq!(h[router]["dtype"], "F32", "{name}: {router} stays as stored");
        }
        assert!(!logits(&out, &[], &format!("layout-{name}")).is_empty(), "{name}");
        let _ = std::fs::remove_dir_all(&out);
    }
}
