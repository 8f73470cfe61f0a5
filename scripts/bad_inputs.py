"""Sends `ferrum serve` each bad input of docs/reliability.md and prints the
answer it got, as a markdown table. Standard library only.

Usage: python3 scripts/bad_inputs.py http://127.0.0.1:PORT
(the server on the qwen3 fixture with `--body-timeout-secs 2 --header-timeout-secs 2`)
"""

import json
import socket
import sys
import time

URL = sys.argv[1]
HOST, PORT = URL.removeprefix("http://").split(":")
PORT = int(PORT)


def exchange(raw, read_timeout=30):
    """Writes raw bytes (a broken pipe is fine: the answer may already be
    there) and returns what came back and how long it took."""
    s = socket.create_connection((HOST, PORT))
    s.settimeout(read_timeout)
    started = time.monotonic()
    try:
        s.sendall(raw)
    except (BrokenPipeError, ConnectionResetError):
        pass
    got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
            if b"\r\n\r\n" in got and b"Connection: close" not in raw and len(got) > 20:
                head, _, body = got.partition(b"\r\n\r\n")
                length = [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
                if length and len(body) >= int(length[0].split(b":")[1]):
                    break
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    return got, time.monotonic() - started


def post(path, body, extra=b""):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return exchange(head.encode() + extra + b"\r\n" + body)


def summary(got):
    status = got[9:12].decode(errors="replace") or "closed"
    body = got.partition(b"\r\n\r\n")[2]
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body[:80].decode(errors="replace") if body else "(no body)"
    return status, message[:110]


CASES = [
    ("malformed JSON", lambda: post("/v1/completions", b'{"prompt": [1, 2')),
    ("wrong type (max_tokens: \"many\")", lambda: post("/v1/completions", {"prompt": "hi", "max_tokens": "many"})),
    ("n: 100000", lambda: post("/v1/completions", {"prompt": "hi", "n": 100000})),
    ("prompt + max_tokens past the context", lambda: post("/v1/completions", {"prompt": [5] * 200, "max_tokens": 100})),
    ("600k-token prompt", lambda: post("/v1/completions", {"prompt": [5] * 600_000})),
    ("token id outside the vocabulary", lambda: post("/v1/completions", {"prompt": [5, 10**9]})),
    ("7 MB body", lambda: post("/v1/completions", b'{"prompt": "' + b"x" * 7_000_000 + b'"}')),
    ("role \"hacker\"", lambda: post("/v1/chat/completions", {"messages": [{"role": "hacker", "content": "hi"}]})),
    ("17 stop strings", lambda: post("/v1/completions", {"prompt": "hi", "stop": [str(i) for i in range(17)]})),
    ("a 257-byte stop string", lambda: post("/v1/completions", {"prompt": "hi", "stop": ["x" * 257]})),
    ("2,000 messages", lambda: post("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}] * 2000})),
    ("temperature -1", lambda: post("/v1/completions", {"prompt": "hi", "temperature": -1})),
    ("unknown model", lambda: post("/v1/completions", {"prompt": "hi", "model": "gpt-9"})),
    ("half a request header", lambda: exchange(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")),
    (
        "10 of 100 body bytes, then nothing",
        lambda: exchange(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\":"),
    ),
]


def main():
    print("| bad input | status | answer | seconds |")
    print("|---|---|---|---|")
    for name, run in CASES:
        got, took = run()
        status, message = summary(got)
        print(f"| {name} | {status} | {message.replace('|', '/')} | {took:.2f} |", flush=True)


if __name__ == "__main__":
    main()
