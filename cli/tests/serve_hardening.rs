//! `ferrum serve` under faults, hostile clients and shutdown: an injected
//! fault fails only its request, a lost device turns `/health` unhealthy,
//! slow and stalled clients are cut off, the connection cap and request
//! limits answer with OpenAI errors, and SIGTERM lets a stream finish.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, http, metric};
use serde_json::{Value, json};

fn fixture() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3");
    path.to_str().unwrap().to_string()
}

fn smollm2() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrum")).arg("pull").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn completion(port: u16, body: Value) -> (u16, Value) {
    let (status, text) = http(port, "POST", "/v1/completions", &body.to_string());
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}")))
}

/// The message of an OpenAI error body, checking its shape.
fn error_message(body: &Value) -> &str {
    let e = &body["error"];
    assert!(e["type"].is_string() && e.get("param").is_some() && e.get("code").is_some(), "{body}");
    e["message"].as_str().unwrap()
}

/// Sends a request on a new connection and returns it, reading nothing.
fn send(port: u16, path: &str, body: &Value) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(format!("{head}{body}").as_bytes()).unwrap();
    s
}

/// Everything the server sends until it closes the connection (or 60 s pass).
fn read_all(mut s: TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn an_injected_fault_fails_only_its_request() {
    let poison = 383; // the fixture's last token id
    let fault = format!("gather_rows:token={poison}:error");
    let server = Server::start_with_env(&["--model", &fixture()], &[("FERRUM_FAULT", &fault)]);
    let healthy = json!({"prompt": [5, 6, 7, 8], "max_tokens": 24, "temperature": 0});
    let (status, alone) = completion(server.port, healthy.clone());
    assert_eq!(status, 200, "{alone}");
    // the poisoned requests run beside a healthy one
    let poisoned = json!({"prompt": [5, 6, poison], "max_tokens": 24, "temperature": 0});
    let streamed =
        send(server.port, "/v1/completions", &json!({"prompt": [9, poison], "max_tokens": 8, "stream": true}));
    let port = server.port;
    let beside = std::thread::spawn(move || completion(port, healthy));
    let (status, failed) = completion(server.port, poisoned);
    assert_eq!(status, 500, "{failed}");
    assert!(error_message(&failed).contains("injected fault"), "{failed}");
    let stream = read_all(streamed);
    assert!(stream.contains(r#"{"error":{"#) && stream.contains("injected fault"), "{stream}");
    let (status, again) = beside.join().unwrap();
    assert_eq!((status, &again["choices"][0]["text"]), (200, &alone["choices"][0]["text"]));
    assert!(common::healthy(server.port));
    assert_eq!(metric(server.port, "ferrum_kv_blocks_used"), Some(0.0));
}

#[test]
fn a_lost_device_turns_health_unhealthy_and_new_requests_get_503() {
    let server = Server::start_with_env(&["--model", &fixture()], &[("FERRUM_FAULT", "add:call=3:lose-device")]);
    let (status, body) = completion(server.port, json!({"prompt": [5, 6], "max_tokens": 4}));
    assert_eq!(status, 500, "{body}");
    let (status, health) = http(server.port, "GET", "/health", "");
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("engine_stopped") && health.contains("lost"), "{health}");
    let (status, body) = completion(server.port, json!({"prompt": [5, 6], "max_tokens": 4}));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "engine_stopped");
    assert_eq!(metric(server.port, "ferrum_engine_healthy"), Some(0.0));
}

/// Eight pipelined streams of ~1.5 MB each, none read: the writes block,
/// and after `--write-timeout-secs` the server closes the connection
/// instead of holding it (and the queued requests) forever.
#[test]
fn a_client_that_stops_reading_is_cut_off() {
    let server = Server::start(&["--model", &fixture(), "--write-timeout-secs", "1"]);
    let big = json!({"prompt": [5, 6, 7], "max_tokens": 250, "n": 16, "stream": true, "ignore_eos": true,
                     "temperature": 0, "logprobs": 5})
    .to_string();
    let one = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{big}",
        big.len()
    );
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.write_all(one.repeat(8).as_bytes()).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let started = Instant::now();
    let got = read_all(s);
    let done = got.matches("data: [DONE]").count();
    assert!(done < 8, "all 8 streams were delivered; the writes never blocked");
    assert!(started.elapsed() < Duration::from_secs(30), "the connection was never closed");
    // a stream read normally still works
    let (status, body) = completion(server.port, json!({"prompt": [5, 6], "max_tokens": 4}));
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(server.port, "ferrum_kv_blocks_used") != Some(0.0) {
        assert!(Instant::now() < deadline, "KV blocks still in use");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn connections_past_the_cap_and_slow_bodies_are_refused() {
    let server = Server::start(&["--model", &fixture(), "--max-connections", "2", "--body-timeout-secs", "1"]);
    // a request that sends 10 of its 100 body bytes: 408 after about 1 s
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let head =
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    slow.write_all(format!("{head}{{\"prompt\":").as_bytes()).unwrap();
    let idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // two connections are open: a third gets 503 with Retry-After
    let mut third = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    third.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let refused = read_all(third);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.to_lowercase().contains("retry-after: 1") && refused.contains("too many open connections"));
    let started = Instant::now();
    let timed_out = read_all(slow);
    assert!(timed_out.starts_with("HTTP/1.1 408") && timed_out.contains("body took longer"), "{timed_out}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(completion(server.port, json!({"prompt": [5, 6], "max_tokens": 2})).0, 200);
}

#[test]
fn each_request_limit_is_a_flag_with_an_openai_error() {
    let server = Server::start(&[
        "--model",
        &fixture(),
        "--max-n",
        "2",
        "--max-messages",
        "2",
        "--max-prompts",
        "2",
        "--max-stop-strings",
        "1",
        "--max-stop-bytes",
        "4",
    ]);
    let user = json!({"role": "user", "content": "hi"});
    for (path, body, says) in [
        ("/v1/completions", json!({"prompt": [5], "n": 3}), "between 1 and 2"),
        ("/v1/completions", json!({"prompt": [[5], [6], [7]]}), "3 prompts; at most 2"),
        ("/v1/completions", json!({"prompt": [5], "stop": ["a", "b"]}), "at most 1"),
        ("/v1/completions", json!({"prompt": [5], "stop": "abcde"}), "5 bytes; at most 4"),
        ("/v1/completions", json!({"prompt": [5, 6, 7], "max_tokens": 254}), "prompt (3 tokens) + max_tokens (254)"),
        ("/v1/chat/completions", json!({"messages": [user, user, user]}), "3 messages; at most 2"),
    ] {
        let (status, text) = http(server.port, "POST", path, &body.to_string());
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status, 400, "{body}: {text}");
        assert!(error_message(&reply).contains(says), "{body}: {text}");
    }
}

fn sigterm(server: &Server) {
    let ok = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

fn exit_within(server: &mut Server, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "still running {limit:?} after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM with a stream in flight: the stream finishes, the server exits 0.
/// With `--shutdown-timeout-secs 1`, a stream that would run for minutes is
/// ended with an error event instead, and the server still exits 0.
#[test]
fn sigterm_lets_a_running_stream_finish_then_exits_0() {
    let model = smollm2();
    for (max_tokens, timeout, ends_with) in [(48, "30", "data: [DONE]"), (4000, "1", "shutting down")] {
        let mut server = Server::start(&["--model", &model, "--shutdown-timeout-secs", timeout]);
        let body = json!({"prompt": "Once upon a time", "max_tokens": max_tokens, "stream": true, "ignore_eos": true});
        let mut s = send(server.port, "/v1/completions", &body);
        let mut first = [0u8; 256];
        let n = s.read(&mut first).unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
        sigterm(&server);
        let rest = read_all(s);
        assert!(rest.contains(ends_with), "{max_tokens} tokens, timeout {timeout}: {rest}");
        let status = exit_within(&mut server, Duration::from_secs(20));
        assert!(status.success(), "{status}");
    }
}
