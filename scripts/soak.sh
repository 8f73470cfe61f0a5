#!/usr/bin/env bash
# soak.sh: load and soak `ferrum serve` from a second process on 127.0.0.1.
#
#   scripts/soak.sh [SECONDS_PER_PHASE] [CLIENTS...]     # default: 60 s each for 256 and 1024 clients
#   SOAK_MODEL=path SOAK_ARGS="--max-queue 64 --kv-cache-mib 64" FERRUM_BIN=target/release/ferrum scripts/soak.sh 600 256 1024
#
# Each phase runs that many concurrent streaming clients with mixed prompt and
# output lengths (10% drop mid-stream, 5% read slowly, 5% bad requests:
# malformed JSON, wrong types, over-long prompts, 5 MiB bodies); see
# scripts/soak.py. Then one table: requests by outcome, the anomalies (hang,
# reset, non-JSON error, unexpected status, cut-short stream, panic in the
# server log: each must be 0), p50/p99 TTFT, the server's RSS at start and end,
# and the KV blocks and connections still in use after the run (must be 0).
# SIGTERM ends the server, which must exit 0. Exit status 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(256 1024)
model="${SOAK_MODEL:-tests/fixtures/qwen3}"
serve_args="${SOAK_ARGS:---max-queue 64 --kv-cache-mib 64}"
bin="${FERRUM_BIN:-target/debug/ferrum}"
cache="${FERRUM_CACHE:-$HOME/.cache/ferrum}"
venv="$cache/venv-soak"
out="${SOAK_OUT:-target/soak}"
mkdir -p "$out"

[ -x "$bin" ] || cargo build -q -p ferrum-cli
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import aiohttp" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q aiohttp==3.14.5
fi

# 1024 clients hold 1024+ sockets on each side
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
# curl may be absent: GET with the venv's Python
get() { "$venv/bin/python" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "$url$1"; }
# shellcheck disable=SC2086
"$bin" serve --model "$model" --port "$port" $serve_args >"$out/serve.stdout" 2>"$out/serve.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  get /health >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$out/serve.log"; echo "ferrum serve died" >&2; exit 1; }
  sleep 0.1
done
rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status"; }
metric() { get /metrics | awk -v m="$1" '$1 == m {print $2}'; }
rss_start=$(rss)

set +e
"$venv/bin/python" scripts/soak.py "$url" "$seconds" "${clients[@]}" --json "$out/soak.json"
load_status=$?
set -e

# the engine settles: nothing running, every block back
for _ in $(seq 300); do
  [ "$(metric ferrum_running_sequences)" = "0" ] && [ "$(metric ferrum_kv_blocks_used)" = "0" ] && break
  sleep 0.1
done
rss_end=$(rss)
kv_after=$(metric ferrum_kv_blocks_used)
running_after=$(metric ferrum_running_sequences)
conns_after=$(metric ferrum_open_connections)
kill -TERM "$pid"
exit_status=0
for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then exit_status="still running 30 s after SIGTERM"; else wait "$pid" || exit_status=$?; fi
trap - EXIT
panics=$(grep -c "panicked" "$out/serve.log" || true)

"$venv/bin/python" - "$out/soak.json" "$rss_start" "$rss_end" "$kv_after" "$running_after" "$conns_after" "$panics" "$exit_status" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
rss_start, rss_end, kv, running, conns, panics, exit_status = sys.argv[2:]
cols = ["clients", "seconds", "requests", "completed", "refused_503", "client_error_4xx", "dropped_by_client",
        "hang", "reset", "non_json_error", "unexpected_status", "stream_cut_short", "missing_retry_after"]
fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) and v < 100 else str(v))
print("| " + " | ".join(cols + ["ttft_p50_s", "ttft_p99_s"]) + " |")
print("|" + "---|" * (len(cols) + 2))
for r in rows:
    print("| " + " | ".join(fmt(r[c]) for c in cols + ["ttft_p50_s", "ttft_p99_s"]) + " |")
    for k, v in r["examples"].items():
        print(f"  first {k}: {v}")
print(f"server RSS {rss_start} MiB at start, {rss_end} MiB at end; after the run: {kv} KV blocks in use, "
      f"{running} sequences running, {conns} connections open (the metrics query's own among them); {panics} panics in the log; exit status on SIGTERM: {exit_status}")
PY

fail=0
[ "$load_status" = 0 ] || { echo "FAIL: anomalies in the load (see above)"; fail=1; }
[ "$kv_after" = "0" ] || { echo "FAIL: $kv_after KV blocks still in use"; fail=1; }
[ "$running_after" = "0" ] || { echo "FAIL: $running_after sequences still running"; fail=1; }
[ "$panics" = "0" ] || { echo "FAIL: panics in $out/serve.log"; fail=1; }
[ "$exit_status" = "0" ] || { echo "FAIL: ferrum serve exit status $exit_status on SIGTERM"; fail=1; }
[ "$fail" = 0 ] && echo "soak: PASS"
exit "$fail"
