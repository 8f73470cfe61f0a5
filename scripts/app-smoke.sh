#!/usr/bin/env bash
# The desktop app in a real window: starts `ferrum-app` under Xvfb (its wgpu
# renderer on lavapipe), loads SmolLM2, asks it a question, and saves what
# the window showed. Passes when the app answered, the screenshot is not
# blank, and OCR (tesseract) reads the question and the answer in it. Then
# the remote panel against a live `ferrum serve` (the qwen3 fixture): it
# must list the served model, stream an answer and chart /metrics.
#
#   scripts/app-smoke.sh [SHOT.png]        # needs Xvfb, tesseract and curl
set -euo pipefail
cd "$(dirname "$0")/.."
shot="${1:-target/app-smoke.png}"
question="What is the capital of France?"

for tool in Xvfb tesseract python3 curl; do
  command -v "$tool" >/dev/null || { echo "app-smoke: $tool is missing (apt-get install xvfb xauth tesseract-ocr)" >&2; exit 1; }
done
cargo build -q -p ferrum-app -p ferrum-cli
model="$(target/debug/ferrum pull)"

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
display=":$((90 + RANDOM % 100))"
Xvfb "$display" -screen 0 1280x900x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
server=""
trap 'kill $xvfb $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X${display#:}" ] && break; sleep 0.1; done

# cpu-ref: the fast CPU backend can flip this prompt's near tie (see cli/tests/smollm2.rs)
answer="$(DISPLAY="$display" WGPU_BACKEND="${WGPU_BACKEND:-vulkan}" timeout 300 target/debug/ferrum-app \
  --model "$model" --backend cpu-ref --smoke "$question" --screenshot "$shot")"
echo "app answered: $answer"

not_blank() {
python3 - "$1" <<'EOF'
"""The screenshot is a real picture: many colours, not one flat fill."""
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, width, height = 8, b"", 0, 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        assert (depth, colour) == (8, 6), "expected 8-bit RGBA"
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw, stride, prev, colours = zlib.decompress(idat), width * 4, bytearray(width * 4), set()
for y in range(height):
    kind, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a, b, c = (row[i - 4] if i >= 4 else 0), prev[i], (prev[i - 4] if i >= 4 else 0)
        p = a + b - c
        pred = [0, a, b, (a + b) // 2, min((a, b, c), key=lambda v: (abs(p - v), [a, b, c].index(v)))][kind]
        row[i] = (row[i] + pred) & 0xFF
    colours.update(bytes(row[i:i + 4]) for i in range(0, stride, 4))
    prev = row
print(f"screenshot {width}x{height}, {len(colours)} colours")
assert width >= 400 and height >= 300, "window too small"
assert len(colours) >= 16, "the screenshot is blank"
EOF
}
not_blank "$shot"

seen="$(tesseract "$shot" - 2>/dev/null)"
for expected in "capital of France" "Paris"; do
  if ! grep -q "$expected" <<<"$seen"; then
    echo "app-smoke: \"$expected\" is not on screen; OCR read:" >&2
    echo "$seen" >&2
    exit 1
  fi
done
grep -q "Paris" <<<"$answer" || { echo "app-smoke: the answer lacks Paris: $answer" >&2; exit 1; }
echo "app-smoke: local chat PASS ($shot)"

# the remote panel against a live server
port=$((20000 + RANDOM % 20000))
target/debug/ferrum serve --model tests/fixtures/qwen3 --backend cpu-ref --port "$port" >/dev/null 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
remote_shot="${shot%.png}-remote.png"
# (a random model may say NUL: dropped before the shell sees it)
out="$(DISPLAY="$display" timeout 300 target/debug/ferrum-app \
  --remote "http://127.0.0.1:$port" --smoke "Hello there" --screenshot "$remote_shot" | tr -d '\000')"
grep -q "^metrics samples: [1-9]" <<<"$out" || { echo "app-smoke: no /metrics charted: $out" >&2; exit 1; }
[ -n "$(grep -v '^metrics samples:' <<<"$out" | tr -d '[:space:]')" ] || { echo "app-smoke: the server's answer is empty" >&2; exit 1; }
not_blank "$remote_shot"
seen="$(tesseract "$remote_shot" - 2>/dev/null)"
for expected in "Serving: qwen3" "Hello there"; do
  grep -q "$expected" <<<"$seen" || { echo "app-smoke: \"$expected\" is not on screen; OCR read: $seen" >&2; exit 1; }
done
echo "app-smoke: remote PASS ($remote_shot)"
