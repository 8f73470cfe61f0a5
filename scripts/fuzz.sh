#!/usr/bin/env bash
# Fuzzes everything Ferrum parses from a stranger (fuzz/fuzz_targets/):
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# runs each target (default: all) for SECONDS (default 60) with libFuzzer
# and AddressSanitizer, overflow checks and debug assertions on, starting
# from seeds taken from the repository's own fixtures, and prints one table:
# executions, corpus size and crashes per target. The corpus grows in
# fuzz/corpus/TARGET between runs; a crash leaves its input in
# fuzz/artifacts/TARGET and makes the script exit 1 (each crash found
# becomes a regression test in the normal suite; see docs/reliability.md).
# FUZZ_JOBS=N runs N targets at once. The table's seconds are those each
# target ran (less than asked when it stopped on a crash). CI runs
# `scripts/fuzz.sh 30`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds="${1:-60}"
shift || true
all=(safetensors gguf config chat_template openai_request tool_calls grammar)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

# cargo-fuzz on the stable toolchain: its nightly flags (-Zsanitizer) pass
# with RUSTC_BOOTSTRAP, and the stable sysroot ships the ASan runtime.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install -q --locked cargo-fuzz --version 0.13.2
fi
# -a: debug assertions and overflow checks in release code
fuzz_flags=(-O -a)
(cd fuzz && cargo fuzz build "${fuzz_flags[@]}")

# Seeds: the repository's own files of each kind, small enough to mutate.
seeds="$root/fuzz/target/seeds"
rm -rf "$seeds"
mkdir -p "$seeds"/{safetensors,gguf,config,chat_template,openai_request,tool_calls,grammar}
# copy FILES... into seed dir $1, each named after its folder and itself
seed() {
  local to=$1
  shift
  for f in "$@"; do cp "$f" "$to/$(basename "$(dirname "$f")")-$(basename "$f")"; done
}
seed "$seeds/safetensors" $(find engine/tests/data tests/fixtures -name '*.safetensors' -size -100k)
printf '%s' '{"weight_map": {"a.weight": "model-00001-of-00002.safetensors"}}' >"$seeds/safetensors/index.json"
# every ggml type (quants.gguf) and tiny whole models (tools/fixtures/make_fuzz_seeds.py)
seed "$seeds/gguf" engine/tests/data/gguf/*.gguf fuzz/seeds/gguf/*.gguf
seed "$seeds/config" tests/fixtures/*/config.json
python3 - "$seeds/chat_template" <<'EOF'
# mode 0: a template (then NUL, then messages); mode 1: messages for a real template
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
chat = b"system\x01Be brief.\x02user\x01Hello\x02assistant\x01Hi!\x02user\x01And now?"
for i, path in enumerate(sorted(pathlib.Path("tests/fixtures").glob("*/tokenizer_config.json"))):
    template = json.loads(path.read_text()).get("chat_template")
    if isinstance(template, str):
        (out / f"template-{i}").write_bytes(b"\x80" + template.encode() + b"\x00" + chat)
        (out / f"messages-{i}").write_bytes(bytes([0x81 | (i << 1) & 0x7f]) + chat)
EOF
seed "$seeds/openai_request" fuzz/seeds/openai_request/*
seed "$seeds/tool_calls" fuzz/seeds/tool_calls/*
seed "$seeds/grammar" fuzz/seeds/grammar/*

dict_of() {
  case "$1" in
    gguf) echo gguf ;;
    config | safetensors) echo json ;;
    chat_template) echo jinja ;;
    openai_request | tool_calls) echo openai ;;
    grammar) echo grammar ;;
  esac
}

# One target's run; its table row goes to fuzz/target/TARGET.row.
fuzz_one() {
  local target=$1
  local corpus="fuzz/corpus/$target" artifacts="fuzz/artifacts/$target" log="fuzz/target/$target.log"
  mkdir -p "$corpus" "$artifacts"
  local before status=0 execs crashes started=$SECONDS
  before=$(find "$artifacts" -type f | wc -l)
  # -timeout: a render or parse over FUZZ_TIMEOUT (10) s is a hang (under
  # ASan, on a machine not loaded past its cores); -malloc_limit_mb: one
  # allocation over 512 MiB is a crash (nothing here may ask for that).
  (cd fuzz && cargo fuzz run "${fuzz_flags[@]}" "$target" "corpus/$target" "$seeds/$target" -- \
    -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -dict="dict/$(dict_of "$target").dict" -print_final_stats=1) >"$log" 2>&1 || status=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  crashes=$(($(find "$artifacts" -type f | wc -l) - before))
  if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    echo "== $target failed (exit $status); the end of $log:" >&2
    tail -40 "$log" >&2
  fi
  echo "| $target | $((SECONDS - started)) | ${execs:-?} | $(find "$corpus" -type f | wc -l) | $(du -sk "$corpus" | cut -f1) KiB | $crashes |" \
    >"fuzz/target/$target.row"
  [ "$status" -eq 0 ] && [ "$crashes" -eq 0 ]
}

# FUZZ_JOBS targets at a time (default 1; each target is one process)
jobs_at_once="${FUZZ_JOBS:-1}"
failed=0
running=0
for target in "${targets[@]}"; do
  fuzz_one "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs_at_once" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done

echo
echo "| target | seconds | executions | corpus files | corpus size | crashes |"
echo "|---|---|---|---|---|---|"
for target in "${targets[@]}"; do cat "fuzz/target/$target.row"; done
exit $failed
