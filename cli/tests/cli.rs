//! The `ferrum` binary as a user runs it: good input works end to end, bad
//! input gets a clear error and exit code 1, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn ferrum(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrum")).args(args).output().expect("runs")
}

/// A scratch copy of a fixture folder, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn copy_of(name: &str, tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ferrum-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(fixture(name)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        Scratch(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn write(&self, file: &str, bytes: &[u8]) {
        std::fs::write(self.0.join(file), bytes).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Exit code 1, the expected words in the message, and no panic.
fn assert_clean_error(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(stderr.contains(expected), "expected {expected:?} in: {stderr}");
}

fn read_f32_tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let f = ferrum_engine::loader::SafetensorsFile::open(path).unwrap();
    let e = &f.tensors[name];
    let data = f.bytes(e).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (e.shape.clone(), data)
}

fn read_i64_tensor(path: &Path, name: &str) -> Vec<i64> {
    let f = ferrum_engine::loader::SafetensorsFile::open(path).unwrap();
    f.bytes(&f.tensors[name]).chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Only the safetensors header of a single-file fixture, rewritten.
fn with_header(original: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&original[8..8 + n]).unwrap();
    edit(&mut header);
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&original[8 + n..]);
    out
}

#[test]
fn logits_command_matches_transformers_in_both_modes() {
    let dir = fixture("qwen2");
    let ids: Vec<String> =
        read_i64_tensor(&dir.join("reference.safetensors"), "input_ids").iter().map(i64::to_string).collect();
    let (_, want) = read_f32_tensor(&dir.join("reference.safetensors"), "logits");
    for mode in ["prefill", "decode"] {
        let out_file = std::env::temp_dir().join(format!("ferrum-logits-{mode}-{}.safetensors", std::process::id()));
        let out = ferrum(&[
            "logits",
            "--model",
            dir.to_str().unwrap(),
            "--tokens",
            &ids.join(","),
            "--out",
            out_file.to_str().unwrap(),
            "--mode",
            mode,
            "--backend",
            "cpu",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (shape, got) = read_f32_tensor(&out_file, "logits");
        assert_eq!(shape, [ids.len(), 384]);
        let max_err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max_err < 1e-3, "{mode}: max err {max_err}");
        let _ = std::fs::remove_file(out_file);
    }
}

#[test]
fn greedy_generate_without_a_tokenizer_prints_the_reference_ids() {
    let dir = fixture("llama-notok");
    let reference = dir.join("reference.safetensors");
    let prompt: Vec<String> = read_i64_tensor(&reference, "input_ids").iter().map(i64::to_string).collect();
    let want: Vec<String> = read_i64_tensor(&reference, "greedy_ids").iter().map(i64::to_string).collect();
    let out = ferrum(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        &prompt.join(","),
        "--max-tokens",
        &want.len().to_string(),
        "--greedy",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want.join(" "));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tok/s"));
}

#[test]
fn chat_and_generate_with_text_run_end_to_end() {
    let dir = fixture("qwen3");
    let out = ferrum(&["chat", "--model", dir.to_str().unwrap(), "Hello", "--max-tokens", "8", "--seed", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = ferrum(&["generate", "--model", dir.to_str().unwrap(), "--prompt", "The fox", "--max-tokens", "8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!out.stdout.is_empty());
}

#[test]
fn info_and_devices_describe_what_is_there() {
    let out = ferrum(&["info", "--model", fixture("llama3-tied").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("LlamaForCausalLM") && text.contains("llama3") && text.contains("BF16"), "{text}");
    let out = ferrum(&["devices"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cpu     available"), "{text}");
    assert!(text.contains("cpu-ref available"), "{text}");
    assert!(text.contains("cuda    unavailable"), "{text}");
}

#[test]
fn a_missing_or_garbled_config_is_a_clear_error() {
    let s = Scratch::copy_of("llama", "config");
    std::fs::remove_file(s.0.join("config.json")).unwrap();
    assert_clean_error(&ferrum(&["info", "--model", s.path()]), "config.json");
    s.write("config.json", b"{ \"hidden_size\": ");
    assert_clean_error(&ferrum(&["info", "--model", s.path()]), "not valid JSON");
    s.write("config.json", br#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 64}"#);
    assert_clean_error(&ferrum(&["info", "--model", s.path()]), "missing `num_attention_heads`");
    assert_clean_error(&ferrum(&["info", "--model", "/nonexistent/model"]), "model folder not found");
}

/// Absurd sizes in a config (made here, not committed) are clear errors
/// before anything is allocated: under a 2 GiB address-space limit, where
/// one allocation of the implied size would abort the process.
#[test]
fn absurd_sizes_in_a_config_are_clear_errors_under_ulimit() {
    for (field, value, expected) in [
        ("hidden_size", "2147483648", "the config implies [2147483648]"),
        ("num_hidden_layers", "1000000", "1000000 layers"),
        ("vocab_size", "1099511627776", "`vocab_size` is 1099511627776; no size in a config may exceed"),
        ("intermediate_size", "9223372036854775807", "no size in a config may exceed 4294967295"),
        ("head_dim", "4294967295", "KV-cache values per token; at most"),
        ("num_key_value_heads", "0", "num_key_value_heads"),
    ] {
        let s = Scratch::copy_of("qwen3", &format!("absurd-{field}"));
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(s.0.join("config.json")).unwrap()).unwrap();
        config[field] = serde_json::from_str(value).unwrap();
        s.write("config.json", config.to_string().as_bytes());
        for command in ["info --model \"$1\"", "generate --model \"$1\" --prompt-ids 1,2 --max-tokens 2"] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("ulimit -v 2000000; exec \"$0\" {command}"))
                .arg(env!("CARGO_BIN_EXE_ferrum"))
                .arg(s.path())
                .output()
                .unwrap();
            if command.starts_with("info") && out.status.success() {
                continue; // info describes the files as stored
            }
            assert_clean_error(&out, expected);
        }
    }
}

/// A KV cache (or model) larger than the memory there is, in RAM or under
/// `ulimit -v`, is refused before loading with both numbers.
#[test]
fn a_model_that_cannot_fit_is_refused_before_loading() {
    let model = fixture("qwen3");
    let serve = |limit: &str, kv_mib: &str| {
        let script = format!("{limit} exec \"$0\" serve --model \"$1\" --port 1 --kv-cache-mib {kv_mib}");
        Command::new("sh").arg("-c").arg(script).arg(env!("CARGO_BIN_EXE_ferrum")).arg(&model).output().unwrap()
    };
    for (limit, kv_mib) in [("", "100000000"), ("ulimit -v 2000000;", "3000")] {
        let out = serve(limit, kv_mib);
        assert_clean_error(&out, "the model needs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("GiB available") && stderr.contains("KV cache"), "{stderr}");
    }
}

#[test]
fn an_unknown_architecture_lists_the_supported_ones() {
    let s = Scratch::copy_of("llama", "arch");
    let text =
        std::fs::read_to_string(s.0.join("config.json")).unwrap().replace("LlamaForCausalLM", "GPTNeoXForCausalLM");
    s.write("config.json", text.as_bytes());
    let out = ferrum(&["generate", "--model", s.path(), "--prompt-ids", "1,2"]);
    assert_clean_error(&out, "GPTNeoXForCausalLM");
    assert_clean_error(&out, "Qwen3ForCausalLM");
}

#[test]
fn malformed_safetensors_are_clear_errors() {
    let s = Scratch::copy_of("llama", "safetensors");
    let good = std::fs::read(fixture("llama").join("model.safetensors")).unwrap();
    let run = || ferrum(&["logits", "--model", s.path(), "--tokens", "1,2", "--out", "/dev/null"]);

    let mut past_end = good.clone();
    past_end[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
    s.write("model.safetensors", &past_end);
    assert_clean_error(&run(), "runs past the end");

    s.write("model.safetensors", &good[..good.len() - 100]);
    assert_clean_error(&run(), "past the");

    s.write("model.safetensors", &good[..5]);
    assert_clean_error(&run(), "shorter than");

    let overlap = with_header(&good, |h| {
        // the norm's 256 bytes moved inside the lm_head's range
        let start = h["lm_head.weight"]["data_offsets"][0].as_u64().unwrap();
        h["model.norm.weight"]["data_offsets"] = serde_json::json!([start, start + 256]);
    });
    s.write("model.safetensors", &overlap);
    assert_clean_error(&run(), "overlap");

    let wrong_dtype = with_header(&good, |h| h["model.norm.weight"]["dtype"] = "F16".into());
    s.write("model.safetensors", &wrong_dtype);
    assert_clean_error(&run(), "needs 128 bytes but data_offsets span 256");

    let huge = with_header(&good, |h| h["model.norm.weight"]["shape"] = serde_json::json!([u64::MAX, 4]));
    s.write("model.safetensors", &huge);
    assert_clean_error(&run(), "overflows");

    let bad_shape = with_header(&good, |h| {
        h["model.norm.weight"]["shape"] = serde_json::json!([32, 2]);
    });
    s.write("model.safetensors", &bad_shape);
    assert_clean_error(&run(), "the config implies [64]");
}

#[test]
fn a_shard_named_in_the_index_but_absent_is_a_clear_error() {
    let s = Scratch::copy_of("llama3-tied", "shard");
    std::fs::remove_file(s.0.join("model-00002-of-00003.safetensors")).unwrap();
    let out = ferrum(&["logits", "--model", s.path(), "--tokens", "1,2", "--out", "/dev/null"]);
    assert_clean_error(&out, "model-00002-of-00003.safetensors");
    assert_clean_error(&out, "missing");
}

#[test]
fn text_without_a_tokenizer_and_bad_token_ids_are_clear_errors() {
    let dir = fixture("llama-notok");
    let dir = dir.to_str().unwrap();
    assert_clean_error(&ferrum(&["generate", "--model", dir, "--prompt", "hi"]), "no tokenizer.json");
    assert_clean_error(&ferrum(&["chat", "--model", dir, "hi"]), "no tokenizer.json");
    assert_clean_error(
        &ferrum(&["logits", "--model", dir, "--tokens", "1,99999", "--out", "/dev/null"]),
        "outside the vocabulary",
    );
    let out = ferrum(&["logits", "--model", dir, "--tokens", "1,x", "--out", "/dev/null"]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn an_absent_backend_is_named_with_its_reason() {
    let out =
        ferrum(&["generate", "--model", fixture("llama").to_str().unwrap(), "--prompt-ids", "1", "--backend", "cuda"]);
    assert_clean_error(&out, "backend cuda is unavailable");
}

#[test]
fn gguf_files_work_and_malformed_ones_are_clear_errors() {
    let good = fixture("gguf").join("llama-f32.gguf");
    let out = ferrum(&["info", "--model", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(Gguf)"));
    let out = ferrum(&["generate", "--model", good.to_str().unwrap(), "--prompt", "The fox", "--max-tokens", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let bytes = std::fs::read(&good).unwrap();
    let dir = std::env::temp_dir().join(format!("ferrum-cli-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.gguf");
    let bad = bad.to_str().unwrap();
    std::fs::write(bad, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(&ferrum(&["info", "--model", bad]), "malformed GGUF");
    let mut magic = bytes.clone();
    magic[..4].copy_from_slice(b"GGUX");
    std::fs::write(bad, &magic).unwrap();
    assert_clean_error(&ferrum(&["generate", "--model", bad, "--prompt-ids", "1"]), "malformed GGUF");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--draft-model` guesses with a model of the same vocabulary: the same
/// greedy output, every guess kept when it is the model itself; one of
/// another vocabulary (SmolLM2's 49152) is refused with both sizes.
#[test]
fn a_draft_model_speeds_generation_without_changing_it() {
    let model = fixture("qwen3");
    let model = model.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args =
            vec!["generate", "--model", model, "--prompt-ids", "5,6,7,5,6,7,5,6", "--max-tokens", "20", "--greedy"];
        args.extend_from_slice(extra);
        let out = ferrum(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (plain, _) = run(&[]);
    let (drafted, report) = run(&["--speculate", "4", "--draft-model", model]);
    assert_eq!(drafted, plain);
    let line = report.lines().find(|l| l.starts_with("[speculation:")).unwrap_or_else(|| panic!("{report}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[1], words[3], "every guess kept: {line}");
    let smollm2 = ferrum(&["pull"]);
    assert!(smollm2.status.success(), "{}", String::from_utf8_lossy(&smollm2.stderr));
    let smollm2 = String::from_utf8(smollm2.stdout).unwrap();
    let out = ferrum(&[
        "generate",
        "--model",
        model,
        "--prompt-ids",
        "5,6",
        "--speculate",
        "2",
        "--draft-model",
        smollm2.trim(),
    ]);
    assert_clean_error(&out, "the draft model's vocabulary has 49152 tokens, the model's 384");
}
