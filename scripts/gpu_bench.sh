#!/usr/bin/env bash
# `dsv4 bench` on the GPU host (issues 12 and 13): nano, and Flash-shaped stacks (hidden 4096,
# 64 heads × 512, 256 MXFP4 experts × 2048, FP8 linears; vocab cut to 8192) written as headers by
# `dsv4 make-skeleton` and filled at load by `--synthetic-weights` (no weight files). The stack of
# LAYERS (6: sliding, sliding, CSA, HCA, CSA, HCA) runs prefill of an 8K prompt and decode at
# batch 1 … 128, ctx 4K, each as a share of the copy bandwidth measured in the same run. A
# 2-layer stack (the two sliding layers) runs batch 1 too, so that the difference gives the
# batch-1 time of one compressed layer (issue 13's figure): (t_LAYERS − t_2) / (LAYERS − 2), with
# the bytes those layers read as its roofline share. Needs the dsv4 binary built by gpu_suite.sh
# (build-gpu/). Logs go to $OUT.
#
# Usage (repo root, GPU host):  scripts/gpu_bench.sh [OUT_DIR] [LAYERS=6]
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-/tmp/dsv4-gpu}}
layers=${2:-6}
bin="$repo/build-gpu/dsv4"
mkdir -p "$out"
log="$out/bench_runtime.txt"
: > "$log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$log" 2>&1
echo "== nano" >> "$log"
timeout 200 "$bin" bench --backend cuda --prompt 2048 --batch 1,8,64,128 --ctx 1024 --steps 32 >> "$log" 2>&1
for n in 2 "$layers"; do
  model=/tmp/dsv4-flash-skeleton-$n
  [ -f "$model/config.json" ] ||
    "$bin" make-skeleton "$model" --family flash --layers "$n" --mtp 0 --vocab 8192 > /dev/null 2>&1
done
echo "== flash stack ($layers layers)" >> "$log"
timeout 400 "$bin" bench -m "/tmp/dsv4-flash-skeleton-$layers" --backend cuda --synthetic-weights 1 --prompt 8192 \
  --batch 1,8,32,64,128 --ctx 4096 --steps 16 > "$out/bench_stack.txt" 2>&1
echo "bench rc=$?" >> "$out/bench_stack.txt"
echo "== flash stack (2 sliding layers)" >> "$log"
timeout 200 "$bin" bench -m /tmp/dsv4-flash-skeleton-2 --backend cuda --synthetic-weights 1 --prompt 0 \
  --batch 1 --ctx 4096 --steps 16 > "$out/bench_sliding.txt" 2>&1
echo "bench rc=$?" >> "$out/bench_sliding.txt"
grep -v "uploading" "$out/bench_stack.txt" >> "$log"
grep -v "uploading" "$out/bench_sliding.txt" >> "$log"
# Batch-1 rows: batch ctx ms/step µs/layer tok/s experts weights_MB KV_MB GB/s share.
awk -v n="$layers" '
  /copy bandwidth/ { for (i = 1; i <= NF; ++i) if ($i == "bandwidth") copy = $(i + 1) }
  $1 == "1" && $2 == "4096" { ms[FILENAME] = $3; mb[FILENAME] = $7 + $8 }
  END {
    a = ARGV[1]; b = ARGV[2]
    if (!(a in ms) || !(b in ms)) { print "compressed layer: a batch-1 row is missing"; exit 1 }
    us = (ms[a] - ms[b]) * 1000 / (n - 2); bytes = (mb[a] - mb[b]) / (n - 2) * 1e6
    printf "compressed layer, batch 1, ctx 4096: %.1f us (%d-layer stack %.3f ms - 2 sliding layers %.3f ms, / %d), %.1f MB, %.1f %% of the copy bandwidth (%s GB/s)\n",
           us, n, ms[a], ms[b], n - 2, bytes / 1e6, 100 * bytes / (us * 1e-6) / (copy * 1e9), copy
  }' "$out/bench_stack.txt" "$out/bench_sliding.txt" >> "$log"
cat "$log"
