#!/usr/bin/env bash
# gpu-check.sh: the CUDA backend's first run on a real GPU (written for one
# H200, a few minutes of GPU time). Nothing here can run without a GPU; CI only
# compiles the kernels (backend-cuda/tests/nvrtc.rs). Run from the repo root:
#
#   scripts/gpu-check.sh            # everything
#   SKIP_BENCH=1 scripts/gpu-check.sh
#
# Needs: the NVIDIA driver; libnvrtc.so.12 on the loader path (CUDA toolkit, or
# `pip install nvidia-cuda-nvrtc-cu12==12.9.86` + LD_LIBRARY_PATH) unless the
# PTX cache ($FERRUM_CACHE/cuda) is already filled; cargo, or prebuilt
# binaries in $FERRUM_BIN_DIR (ferrum, ferrum-conformance). Optional: python3
# with torch + transformers for the peer numbers and copy bandwidth.
#
# Each step prints PASS / FAIL / SKIP with what it proves; the script runs
# every step and exits non-zero if any step failed.
set -euo pipefail
cd "$(dirname "$0")/.."

failures=()
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; failures+=("$1"); }
skip() { echo "SKIP  $*"; }
step() { echo; echo "=== $* ==="; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export FERRUM_CACHE="${FERRUM_CACHE:-$work/cache}"

step "0. the machine"
# Proves: a driver and a GPU are present; records what we measured on.
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || fail "nvidia-smi"
python3 - <<'PY' || true
import ctypes.util
print("libnvrtc:", ctypes.util.find_library("nvrtc") or "not on the default loader path (LD_LIBRARY_PATH?)")
PY

step "1. build (release)"
# Proves: the workspace builds on the GPU machine (same code as CI).
bin="${FERRUM_BIN_DIR:-target/release}"
if command -v cargo >/dev/null; then
  cargo build --release -q -p ferrum-cli -p ferrum-conformance && pass "build" || fail "build"
  bin=target/release
else
  skip "no cargo: using prebuilt binaries in $bin"
fi
ferrum="$bin/ferrum"
[ -x "$ferrum" ] || { fail "no $ferrum"; echo "cannot continue"; exit 1; }

step "2. open the backend"
# Proves: libcuda probing, context creation, NVRTC (or the PTX cache) for this
# GPU's own arch, module load and every entry point found: `open()` is Ok.
"$ferrum" devices 2>&1 | tee "$work/devices.txt" || true
if grep -qE "^cuda +available" "$work/devices.txt"; then
  pass "cuda backend opens"
else
  fail "cuda backend opens (see the list above for the reason)"
fi
if command -v cargo >/dev/null; then
  # the unit tests, with the launch-free checks plus open() taking the Ok branch
  cargo test --release -q -p ferrum-backend-cuda -- --nocapture 2>&1 | tail -n 15 && pass "backend-cuda tests" \
    || fail "backend-cuda tests"
fi

step "3. conformance: every op x dtype x shape case, cuda vs the CPU reference"
# Proves: every launch path (gemv and tiled matmul for f32/f16/bf16, paged
# attention with GQA / window / softcap, rope both styles, kv_store, gather,
# elementwise) computes what the reference computes, within the per-dtype
# tolerance; host index checks turn bad ids into Err (error cases in the table).
conf="$bin/ferrum-conformance"
if [ -x "$conf" ]; then
  FERRUM_REQUIRE_BACKENDS=cpu,cuda "$conf" --require cpu,cuda 2>&1 | tee "$work/conformance.txt" | tail -n 40 \
    && pass "conformance (cpu,cuda)" || fail "conformance (cpu,cuda)"
  grep -E " cuda: " "$work/conformance.txt" | grep -vE " cuda: OK" | head -n 30 || true
  "$conf" support 2>&1 | tail -n 15 || true
else
  fail "no $conf"
fi
if command -v cargo >/dev/null; then
  FERRUM_REQUIRE_BACKENDS=cpu,cuda cargo test --release -q -p ferrum-conformance --test ops 2>&1 | tail -n 5 \
    && pass "conformance tests (cargo)" || fail "conformance tests (cargo)"
fi

step "4. model fixtures on cuda vs transformers' logits"
# Proves: whole models (Llama, Mistral, Qwen2/3, Gemma 1/2/3...) run end to end
# on cuda, prefill and decode (KV cache through kv_store + paged attention),
# and match the float32 transformers reference (max_err / std(ref) <= 2e-3,
# the GPU bar of tests/tests/models.rs).
cat > "$work/cmp.py" <<'PY'
import json, struct, sys, math
def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n)); data = f.read()
    out = {}
    for k, v in head.items():
        if k == "__metadata__": continue
        a, b = v["data_offsets"]; raw = data[a:b]
        fmt = {"F32": "f", "I64": "q", "I32": "i"}[v["dtype"]]
        out[k] = list(struct.unpack("<%d%s" % (len(raw) // struct.calcsize(fmt), fmt), raw))
    return out
cmd, ref_path = sys.argv[1], sys.argv[2]
ref = load(ref_path)
if cmd == "ids":
    print(",".join(str(i) for i in ref["input_ids"])); sys.exit(0)
got = load(sys.argv[3])["logits"]; want = ref["logits"]
mean = sum(want) / len(want); std = math.sqrt(sum((w - mean) ** 2 for w in want) / len(want))
err = max(abs(g - w) for g, w in zip(got, want)) / std
print("%.2e" % err); sys.exit(0 if len(got) == len(want) and err <= 2e-3 else 1)
PY
for dir in tests/fixtures/*/; do
  name="$(basename "$dir")"
  [ -f "$dir/reference.safetensors" ] && [ -f "$dir/config.json" ] || continue
  ids="$(python3 "$work/cmp.py" ids "$dir/reference.safetensors")"
  for mode in prefill decode; do
    if "$ferrum" logits --backend cuda --model "$dir" --tokens "$ids" --mode "$mode" --out "$work/$name-$mode.st" \
      >/dev/null 2>"$work/$name-$mode.log"; then
      if err="$(python3 "$work/cmp.py" cmp "$dir/reference.safetensors" "$work/$name-$mode.st")"; then
        pass "fixture $name $mode max_err/std=$err"
      else
        fail "fixture $name $mode max_err/std=$err"
      fi
    else
      fail "fixture $name $mode: $(tail -n 2 "$work/$name-$mode.log" | tr '\n' ' ')"
    fi
  done
done

if [ -n "${SKIP_BENCH:-}" ]; then
  skip "bench (SKIP_BENCH set)"
else
  step "5. batch-1 decode of a ~1B Llama-shaped random bf16 model: ferrum vs transformers, vs the HBM roofline"
  # Proves: decode speed on real hardware, as a fraction of the roofline
  # (bytes of weights read per token / measured device copy bandwidth), next
  # to transformers on the same weights in the same run (DESIGN.md 3).
  # The model: Llama 3.2 1B's shapes with a 32k vocabulary (untied), random
  # bf16 weights written by plain Python (no torch needed): a block of
  # N(0, 0.02) values tiled over every tensor; speed does not depend on values.
  model="$work/llama-1b"
  python3 - "$model" <<'PY'
import json, os, random, struct, sys
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
H, I, L, NH, KV, D, V = 2048, 8192, 16, 32, 8, 64, 32000
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": I,
       "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": KV, "head_dim": D,
       "vocab_size": V, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "hidden_act": "silu",
       "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}, "tie_word_embeddings": False,
       "attention_bias": False, "mlp_bias": False, "bos_token_id": 0, "eos_token_id": 1, "dtype": "bfloat16"}
json.dump(cfg, open(f"{out}/config.json", "w"), indent=1)
json.dump({"bos_token_id": 0, "eos_token_id": 1}, open(f"{out}/generation_config.json", "w"))
random.seed(0)
def bf16(x): return struct.unpack("<I", struct.pack("<f", x))[0] >> 16
block = struct.pack("<%dH" % 65536, *(bf16(random.gauss(0, 0.02)) for _ in range(65536)))
ones = struct.pack("<H", bf16(1.0)) * 65536
shapes = {"model.embed_tokens.weight": (V, H), "lm_head.weight": (V, H), "model.norm.weight": (H,)}
for l in range(L):
    p = f"model.layers.{l}."
    shapes.update({p + "self_attn.q_proj.weight": (NH * D, H), p + "self_attn.k_proj.weight": (KV * D, H),
                   p + "self_attn.v_proj.weight": (KV * D, H), p + "self_attn.o_proj.weight": (H, NH * D),
                   p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H), p + "mlp.down_proj.weight": (H, I),
                   p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,)})
head, off = {}, 0
for name, shape in shapes.items():
    n = 2
    for s in shape: n *= s
    head[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}; off += n
hj = json.dumps(head).encode(); hj += b" " * (-len(hj) % 8)
with open(f"{out}/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(hj))); f.write(hj)
    for name, shape in shapes.items():
        n = head[name]["data_offsets"][1] - head[name]["data_offsets"][0]
        src = ones if name.endswith("norm.weight") else block
        while n > 0:
            chunk = src[:min(n, len(src))]; f.write(chunk); n -= len(chunk)
lin = sum(a * b for k, (a, *r) in shapes.items() for b in r if "proj" in k or k == "lm_head.weight")
json.dump({"weight_bytes_per_token": 2 * lin + 2 * H * (2 * L + 1) + 2 * H}, open(f"{out}/bytes.json", "w"))
print(f"wrote {out}: {off / 2**30:.2f} GiB, {lin / 1e9:.2f} B linear params")
PY
  bytes_per_token="$(python3 -c "import json; print(json.load(open('$model/bytes.json'))['weight_bytes_per_token'])")"

  # Device copy bandwidth (read + write of a 4 GiB buffer), the roofline's denominator.
  have_torch=0
  python3 -c "import torch, transformers; assert torch.cuda.is_available()" 2>/dev/null && have_torch=1
  if [ "$have_torch" = 1 ]; then
    bw="$(python3 - <<'PY'
import torch
a = torch.empty(1 << 31, dtype=torch.bfloat16, device="cuda"); b = torch.empty_like(a)
for _ in range(3): b.copy_(a)
torch.cuda.synchronize(); s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(10): b.copy_(a)
e.record(); torch.cuda.synchronize()
print(2 * a.numel() * a.element_size() * 10 / (s.elapsed_time(e) / 1e3))
PY
)"
    echo "measured copy bandwidth: $(python3 -c "print(f'{$bw/1e12:.2f} TB/s')")"
  else
    bw=4.8e12
    skip "no torch+transformers with CUDA: bandwidth is the H200's nominal 4.8 TB/s, no peer numbers"
  fi
  roofline="$(python3 -c "print($bw / $bytes_per_token)")"
  echo "weights read per token: $(python3 -c "print(f'{$bytes_per_token/1e9:.2f} GB')"), roofline $(python3 -c "print(f'{$roofline:.0f}')") tok/s"

  if "$ferrum" bench --backend cuda --model "$model" --concurrency 1 --num-prompts 4 --input-len 128 --output-len 128 \
    --json "$work/bench.json" 2>&1 | tail -n 20; then
    tps="$(python3 - "$work/bench.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
def find(o, key):
    if isinstance(o, dict):
        if key in o: return o[key]
        for v in o.values():
            r = find(v, key)
            if r is not None: return r
    return None
tpot = find(j, "tpot")
print(1e3 / tpot["mean_ms"] if tpot and tpot.get("mean_ms") else 0)
PY
)"
    echo "ferrum cuda batch-1 decode: $(python3 -c "print(f'{$tps:.1f} tok/s = {100*$tps/$roofline:.1f}% of roofline')")"
    pass "ferrum bench"
  else
    fail "ferrum bench --backend cuda"
  fi

  if [ "$have_torch" = 1 ]; then
    python3 - "$model" "$roofline" <<'PY' || fail "transformers peer"
import sys, time, torch
from transformers import AutoModelForCausalLM
path, roof = sys.argv[1], float(sys.argv[2])
m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).cuda().eval()
ids = torch.randint(2, 32000, (1, 128), device="cuda")
def gen(n):
    torch.cuda.synchronize(); t = time.perf_counter()
    m.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    torch.cuda.synchronize(); return time.perf_counter() - t
gen(8)
t1, t129 = gen(1), gen(129)
tps = 128 / (t129 - t1)
print(f"transformers (eager, bf16) batch-1 decode: {tps:.1f} tok/s = {100 * tps / roof:.1f}% of roofline")
PY
  fi
fi

echo
if [ ${#failures[@]} -eq 0 ]; then
  echo "ALL PASSED"
else
  echo "FAILED: ${failures[*]}"
  exit 1
fi
