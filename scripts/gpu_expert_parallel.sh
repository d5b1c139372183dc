#!/usr/bin/env bash
# Issue 16's Flash-shaped check of expert and tensor parallelism on one GPU: a 6-layer Flash stack
# (sparse skeleton + synthetic weights: nothing written but headers) run as one rank, as EP = 2 and
# 4 loopback virtual ranks, EP = TP = 2, and through the one-rank NCCL path. `dsv4 logits` over a
# prompt that crosses CSA and HCA windows must give one rank's bytes in every EP layout (TP's
# reassociated wo_b sum: top-1 agreement and cosine printed); `dsv4 bench` then times prefill and
# decode per layout (the communication layer's cost on one card). Needs the dsv4
# binary built by gpu_suite.sh (build-gpu/). Logs go to $OUT.
#
# Usage (repo root, GPU host):  scripts/gpu_expert_parallel.sh [OUT_DIR] [LAYERS=6] [TOKENS=700]
#   BENCH_LAYOUTS="1 auto;2 loopback 2" times only those layouts ("EP COMM [TP]"; default: all),
#   BENCH_BATCH=1,8,64 the decode batch sizes.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-/tmp/dsv4-gpu}}
layers=${2:-6}
tokens=${3:-700}
bin="$repo/build-gpu/dsv4"
model=/tmp/dsv4-flash-sparse-$layers
log="$out/expert_parallel.txt"
mkdir -p "$out"
: > "$log"
[ -f "$model/config.json" ] ||
  "$bin" make-skeleton "$model" --family flash --layers "$layers" --mtp 0 --vocab 8192 >> "$log" 2>&1
python3 -c "import json,random; r=random.Random(11); print(json.dumps([r.randrange(8192) for _ in range($tokens)]))" \
  > /tmp/dsv4-ep-tokens.json
common=(-m "$model" --backend cuda --synthetic-weights 1 --ctx-size 8192 --max-seqs 64)
layouts=("1 auto" "2 loopback" "4 loopback" "1 nccl" "2 loopback 2")
status=0
for layout in "${layouts[@]}"; do
  set -- $layout
  name="ep$1-$2${3:+-tp$3}"
  comm=()
  [ "$2" != auto ] && comm=(--comm "$2")
  echo "== logits $name" >> "$log"
  "$bin" logits "${common[@]}" --ep "$1" --tp "${3:-1}" "${comm[@]}" --tokens /tmp/dsv4-ep-tokens.json --chunk 256 \
    --out "/tmp/dsv4-ep-$name.npy" >> "$log" 2>&1 || { echo "logits $name failed" | tee -a "$log"; status=1; }
done
for layout in "${layouts[@]:1:3}"; do
  set -- $layout
  if cmp -s /tmp/dsv4-ep-ep1-auto.npy "/tmp/dsv4-ep-ep$1-$2.npy"; then
    echo "logits ep$1-$2: identical to one rank ($tokens tokens × 8192)" | tee -a "$log"
  else
    echo "logits ep$1-$2: DIFFER from one rank" | tee -a "$log"
    status=1
  fi
done
python3 - /tmp/dsv4-ep-ep1-auto.npy /tmp/dsv4-ep-ep2-loopback-tp2.npy >> "$log" 2>&1 <<'PY' || status=1
import sys
import numpy as np
a, b = np.load(sys.argv[1]).astype(np.float64), np.load(sys.argv[2]).astype(np.float64)
cos = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
top1 = (a.argmax(1) == b.argmax(1)).mean()
print(f"logits ep2-tp2 vs one rank: top-1 {top1:.4f}, min cosine {cos.min():.7f}, "
      f"max |diff| {np.abs(a - b).max():.4g}, identical rows {(a == b).all(1).sum()} of {len(a)}")
PY
bench_layouts=("${layouts[@]}")
[ -n "${BENCH_LAYOUTS:-}" ] && IFS=';' read -r -a bench_layouts <<< "$BENCH_LAYOUTS"
for layout in "${bench_layouts[@]}"; do
  set -- $layout
  comm=()
  [ "$2" != auto ] && comm=(--comm "$2")
  echo "== bench ep$1-$2${3:+-tp$3}" >> "$log"
  "$bin" bench "${common[@]}" --ep "$1" --tp "${3:-1}" "${comm[@]}" --prompt 2048 --batch "${BENCH_BATCH:-1,8,64}" --ctx 4096 --steps 8 \
    >> "$log" 2>&1 || { echo "bench ep$1-$2 failed" | tee -a "$log"; status=1; }
done
grep -E "^\| |tok/s|identical|DIFFER|failed|Prefill|top-1|^== bench" "$log"
exit $status
