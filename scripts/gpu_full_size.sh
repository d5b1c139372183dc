#!/usr/bin/env bash
# Issue 18's full-size runs on a several-GPU host: Flash (or Pro) as a sparse skeleton with synthetic
# weights (no weight files), loaded across the host's GPUs with the routed experts split (and, with
# TP=N, the attention heads), then `dsv4 bench` prefill at 8K and decode at the batch sizes and
# contexts of the issue. On a host with too few GPUs the load fails before any upload, naming the
# GPUs the model needs — which is also the one-GPU dry run. Needs the dsv4 binary built by
# gpu_suite.sh (build-gpu/). Logs go to $OUT.
#
# Usage (repo root, GPU host):  scripts/gpu_full_size.sh [OUT_DIR] [FAMILY=flash] [GPUS=auto] [TP=1]
#   BATCH (default 1,16,64) and CTXS (default "4096 65536") choose the decode runs.
set -uo pipefail
export NCCL_NVLS_ENABLE=0  # NVLink multicast stays off (collective.h)
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-/tmp/dsv4-gpu}}
family=${2:-flash}
gpus=${3:-auto}
tp=${4:-1}
bin="$repo/build-gpu/dsv4"
model=/tmp/dsv4-$family-full
log="$out/full_size_$family.txt"
mkdir -p "$out"
: > "$log"
{ nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv; nproc; free -g | head -2; } >> "$log" 2>&1
[ -f "$model/config.json" ] || "$bin" make-skeleton "$model" --family "$family" >> "$log" 2>&1
"$bin" inspect -m "$model" --gpu-gib 139 >> "$log" 2>&1
status=0
for ctx in ${CTXS:-4096 65536}; do
  echo "== bench $family gpus=$gpus tp=$tp ctx=$ctx" >> "$log"
  "$bin" bench -m "$model" --backend cuda --synthetic-weights 1 --gpus "$gpus" --tp "$tp" --ctx-size "$ctx" \
    --max-seqs 64 --prompt 8192 --batch "${BATCH:-1,16,64}" --ctx "$ctx" --steps 8 >> "$log" 2>&1 || status=1
done
grep -E "GPU plan|GPUs?:|^rank|loaded|prefill|^ +[0-9]+ +[0-9]+ |error|needs" "$log"
exit $status
