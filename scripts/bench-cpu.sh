#!/usr/bin/env bash
# Ferrum's CPU backend next to llama.cpp on the same GGUF files, in one run.
#
#   scripts/bench-cpu.sh            # build the peer (cached), make the files, print the table
#   scripts/bench-cpu.sh --build    # only build llama.cpp's llama-bench and llama-quantize
#
# llama.cpp comes from the PyPI source distribution of llama-cpp-python (it
# vendors llama.cpp), built with cmake; the files are SmolLM2-135M-Instruct's
# shipped Q4_1 and F16, Q8_0, Q4_0, Q4_K_M made from it with llama-quantize
# (--allow-requantize: both engines load the same files, which is what counts).
# For 1 and 2 threads: pp128, pp512 and tg128 for each engine (llama-bench
# medians of REPS runs; ferrum bench medians of REPS requests), their ratio,
# peak RSS of each process, and the decode roofline: the read bandwidth this
# machine measures over the weight bytes one token reads. Then Ferrum's
# --quant nvfp4 and int8 rows, and concurrency 16 against 1.
set -euo pipefail
cd "$(dirname "$0")/.."
PEER="${FERRUM_PEER_DIR:-$HOME/.cache/ferrum/llama.cpp}"
REPS="${REPS:-3}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

build_peer() {
  [ -x "$PEER/build/bin/llama-bench" ] && [ -x "$PEER/build/bin/llama-quantize" ] && return
  command -v cmake >/dev/null || { apt-get install -y -qq cmake >/dev/null 2>&1 || python3 -m pip install -q cmake; }
  mkdir -p "$PEER"
  python3 -m pip download -q --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d "$PEER"
  tar -xzf "$PEER"/llama_cpp_python-0.3.36.tar.gz -C "$PEER"
  cmake -S "$PEER/llama_cpp_python-0.3.36/vendor/llama.cpp" -B "$PEER/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DBUILD_SHARED_LIBS=OFF >/dev/null
  cmake --build "$PEER/build" -j"$(nproc)" --target llama-bench llama-quantize >/dev/null
}
build_peer
[ "${1:-}" = "--build" ] && exit 0

cargo build -q --release -p ferrum-cli -p ferrum-backend-cpu --example bandwidth
FERRUM=target/release/ferrum
ORIG="$($FERRUM pull)"
FILES="$PEER/files"
mkdir -p "$FILES"
cp -n "$ORIG" "$FILES/q4_1.gguf"
for t in f16 q8_0 q4_0 q4_k_m; do
  [ -f "$FILES/$t.gguf" ] || "$PEER/build/bin/llama-quantize" --allow-requantize "$FILES/q4_1.gguf" "$FILES/$t.gguf" "${t^^}" >/dev/null 2>&1
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
rss_mib() { awk '/Maximum resident/ {printf "%.0f", $6 / 1024}' "$1"; }

# llama-bench: tok/s for pp128, pp512, tg128 (averages of REPS runs) with
# --repack 0, tg128 with its default repacking ("-" when that run fails: on
# this VM its AMX prefill path dies of a general protection fault), peak RSS
peer() { # file threads
  local log; log=$(mktemp)
  /usr/bin/time -v "$PEER/build/bin/llama-bench" -m "$1" -t "$2" -p 128,512 -n 128 -r "$REPS" --repack 0 -o csv \
    2>"$log" >"$log.csv"
  "$PEER/build/bin/llama-bench" -m "$1" -t "$2" -p 0 -n 128 -r "$REPS" -o csv 2>/dev/null >"$log.re.csv" || true
  python3 - "$log.csv" "$log.re.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for p, g in [("128", "0"), ("512", "0"), ("0", "128")]:
    print(next(r["avg_ts"] for r in rows if r["n_prompt"] == p and r["n_gen"] == g))
try:
    print(next(r["avg_ts"] for r in csv.DictReader(open(sys.argv[2])) if r["n_gen"] == "128"))
except (StopIteration, KeyError, OSError):
    print("-")
PY
  rss_mib "$log"
}

# ferrum bench in-process: pp from TTFT of a fresh prompt, tg from TPOT
ours() { # file threads [extra flags]
  local f=$1 t=$2; shift 2
  local log; log=$(mktemp)
  for pp in 128 512; do
    /usr/bin/time -v $FERRUM bench --model "$f" --backend cpu --threads "$t" "$@" --input-len "$pp" --output-len 1 \
      --num-prompts "$REPS" --concurrency 1 >"$log.out" 2>"$log"
    awk -v n="$pp" '/^TTFT/ {printf "%.1f\n", n * 1000 / $3}' "$log.out"
  done
  /usr/bin/time -v $FERRUM bench --model "$f" --backend cpu --threads "$t" "$@" --input-len 8 --output-len 128 \
    --num-prompts "$REPS" --concurrency 1 >"$log.out" 2>"$log"
  awk '/^TPOT/ {printf "%.1f\n", 1000 / $3}' "$log.out"
  rss_mib "$log"
}


echo "machine: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'), $(nproc) cores; $(date -u +%F)"
echo "ferrum $(git rev-parse --short HEAD), llama.cpp from llama-cpp-python 0.3.36; medians of $REPS runs"
printf "\n| file | threads | test | llama.cpp tok/s | ferrum tok/s | ratio | llama.cpp repacked tok/s | ratio | RSS llama.cpp MiB | RSS ferrum MiB | roofline tg tok/s |\n"
printf "|---|---|---|---|---|---|---|---|---|---|---|\n"
for t in 1 2; do
  bw=$(target/release/examples/bandwidth "$t")
  for name in q4_1 f16 q8_0 q4_0 q4_k_m; do
    f="$FILES/$name.gguf"
    mapfile -t P < <(peer "$f" "$t")
    mapfile -t F < <(ours "$f" "$t")
    bytes=$(stat -c %s "$f")
    roof=$(awk -v bw="$bw" -v b="$bytes" 'BEGIN {printf "%.0f", bw * 1e9 / b}')
    for i in 0 1 2; do
      test=(pp128 pp512 tg128)
      ratio=$(awk -v a="${F[$i]}" -v b="${P[$i]}" 'BEGIN {printf "%.2f", a / b}')
      re="-" re_ratio="-"
      if [ "$i" = 2 ] && [ "${P[3]}" != "-" ]; then
        re="${P[3]}" re_ratio=$(awk -v a="${F[2]}" -v b="${P[3]}" 'BEGIN {printf "%.2f", a / b}')
      fi
      printf "| %s | %s | %s | %.1f | %.1f | %s | %s | %s | %s | %s | %s |\n" "$name" "$t" "${test[$i]}" "${P[$i]}" \
        "${F[$i]}" "$ratio" "$re" "$re_ratio" "${P[4]}" "${F[3]}" "$([ "$i" = 2 ] && echo "$roof" || echo -)"
    done
  done
done

printf "\nFerrum's own quantizers on the F16 file, next to llama.cpp's nearest format (2 threads):\n\n"
printf "| ferrum --quant | tg128 tok/s | pp512 tok/s | RSS MiB | llama.cpp nearest |\n|---|---|---|---|---|\n"
for q in nvfp4:q4_0 int8:q8_0; do
  mapfile -t F < <(ours "$FILES/f16.gguf" 2 --quant "${q%%:*}")
  printf "| %s | %.1f | %.1f | %s | %s |\n" "${q%%:*}" "${F[2]}" "${F[1]}" "${F[3]}" "${q##*:}"
done

printf "\nConcurrency (q4_1, 2 threads, input 128, output 64, 32 requests):\n\n"
for c in 1 16; do
  $FERRUM bench --model "$FILES/q4_1.gguf" --backend cpu --input-len 128 --output-len 64 --num-prompts 32 \
    --concurrency "$c" 2>/dev/null | awk -v c="$c" '/^output throughput/ {print "concurrency " c ": " $4 " output tok/s"}'
done
