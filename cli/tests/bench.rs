//! `ferrum bench` in-process and against a live `ferrum serve`: every request
//! completes with exactly the asked-for tokens, and the report adds up.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ferrum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrum"))
}

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3").to_str().unwrap().to_string()
}

fn bench(extra: &[&str], tag: &str) -> serde_json::Value {
    let json = std::env::temp_dir().join(format!("ferrum-bench-{tag}-{}.json", std::process::id()));
    let out = ferrum()
        .args(["bench", "--input-len", "8:24", "--output-len", "12", "--num-prompts", "10", "--concurrency", "4"])
        .args(extra)
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("output throughput (tok/s)") && stdout.contains("TTFT"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(json);
    report
}

fn check(report: &serde_json::Value) {
    assert_eq!(report["successful_requests"], 10, "{report}");
    assert_eq!(report["failed_requests"], 0);
    assert_eq!(report["output_tokens"], 120, "EOS is ignored: 10 x 12 tokens");
    let ttft = &report["ttft"];
    assert!(ttft["mean_ms"].as_f64().unwrap() > 0.0);
    assert!(ttft["median_ms"].as_f64().unwrap() <= ttft["p99_ms"].as_f64().unwrap());
    assert!(report["output_tokens_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_in_process() {
    check(&bench(&["--model", &fixture()], "local"));
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn bench_against_a_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _server = Server(
        ferrum()
            .args(["serve", "--model", &fixture(), "--port", &port.to_string(), "--api-key", "k"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !common::healthy(port) {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}");
    check(&bench(&["--url", &url, "--api-key", "k"], "http"));
}
