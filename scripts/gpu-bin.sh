#!/usr/bin/env bash
# gpu-bin.sh: release builds of `ferrum` and `ferrum-conformance`, stripped,
# in .gpubin/ (git-ignored), to carry to the GPU machine instead of building
# there (the device budget includes the build):
#
#   scripts/gpu-bin.sh                    # here, on a machine with cargo
#   FERRUM_BIN_DIR=.gpubin scripts/gpu-check.sh    # there (carry: .gpubin)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p ferrum-cli -p ferrum-conformance
mkdir -p .gpubin
for b in ferrum ferrum-conformance; do
  objcopy --strip-all "target/release/$b" ".gpubin/$b"
done
du -ch .gpubin/* | sed 's/^/  /'
