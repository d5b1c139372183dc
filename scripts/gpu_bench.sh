#!/usr/bin/env bash
# `dsv4 bench` on the GPU host (issues 12 and 13): nano, and a Flash-shaped random stack written by
# `dsv4 make-skeleton --random` (hidden 4096, 64 heads × 512, 256 MXFP4 experts × 2048, FP8
# linears; LAYERS of Flash's schedule — 6: sliding, sliding, CSA, HCA, CSA, HCA; vocab cut to 8192
# to spare disk): prefill of an 8K prompt and decode at batch 1 … 128, ctx 4K, each as a share of
# the copy bandwidth measured in the same run. Needs the dsv4 binary built by gpu_suite.sh
# (build-gpu/). Logs go to $OUT.
#
# Usage (repo root, GPU host):  scripts/gpu_bench.sh [OUT_DIR] [LAYERS=6]
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-/tmp/dsv4-gpu}}
layers=${2:-6}
bin="$repo/build-gpu/dsv4"
model=/tmp/dsv4-flash-stack-$layers
mkdir -p "$out"
log="$out/bench_runtime.txt"
: > "$log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$log" 2>&1
echo "== nano" >> "$log"
timeout 200 "$bin" bench --backend cuda --prompt 2048 --batch 1,8,64,128 --ctx 1024 --steps 32 >> "$log" 2>&1
if [ ! -f "$model/config.json" ]; then
  /usr/bin/time -f "make-skeleton: %e s, max RSS %M KB" \
    "$bin" make-skeleton "$model" --family flash --layers "$layers" --mtp 0 --vocab 8192 --random 1 >> "$log" 2>&1
fi
du -sh "$model" >> "$log"
echo "== flash stack ($layers layers)" >> "$log"
timeout 400 "$bin" bench -m "$model" --backend cuda --prompt 8192 --batch 1,8,32,64,128 --ctx 4096 --steps 16 \
  >> "$log" 2>&1
echo "bench rc=$?" >> "$log"
cat "$log"
