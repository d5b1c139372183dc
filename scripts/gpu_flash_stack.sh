#!/usr/bin/env bash
# Issue 6's Flash-shaped check on the GPU host: a random stack with Flash's shapes (hidden 4096,
# 64 heads × 512, 256 MXFP4 experts × 2048, FP8 128×128 linears; Flash's first 4 layers are
# sliding, sliding, CSA, HCA with hash, hash, hash, score routing; vocab cut to 8192 to spare disk) written by `dsv4 make-skeleton --random`, then
# `dsv4 compare` of the CPU reference (official-bf16, the GPU's rounding points) against the CUDA
# backend on a short sequence that crosses an HCA window. Needs the dsv4 binary built by
# gpu_suite.sh (build-gpu/). Logs go to $OUT.
#
# Usage (repo root, GPU host):  scripts/gpu_flash_stack.sh [OUT_DIR] [LAYERS=4] [TOKENS=256]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-/tmp/dsv4-gpu}}
layers=${2:-4}
tokens=${3:-256}
bin="$repo/build-gpu/dsv4"
model=/tmp/dsv4-flash-stack-$layers
mkdir -p "$out"
if [ ! -f "$model/config.json" ]; then
  /usr/bin/time -f "make-skeleton: %e s, max RSS %M KB" \
    "$bin" make-skeleton "$model" --family flash --layers "$layers" --mtp 0 --vocab 8192 --random 1 \
    > "$out/flash_stack.txt" 2>&1
fi
du -sh "$model" >> "$out/flash_stack.txt"
# A deterministic token sequence over the whole vocabulary.
python3 -c "import json,random; r=random.Random(7); print(json.dumps([r.randrange(8192) for _ in range($tokens)]))" \
  > /tmp/dsv4-flash-tokens.json
# The GPU against the CPU with the same rounding points, and the CPU's two official modes against
# each other: the size of a BF16-rounding-only difference on these weights (forward_parity.cpp).
for pair in "cpu-official-bf16 cuda" "cpu-official-bf16 cpu-official"; do
  set -- $pair
  "$bin" compare -m "$model" --tokens /tmp/dsv4-flash-tokens.json --chunk 128 --a "$1" --b "$2" \
    2> /dev/null >> "$out/flash_stack.txt"
done
grep -E "logits|final|^a = |ran in" "$out/flash_stack.txt"
