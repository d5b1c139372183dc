#!/usr/bin/env bash
# Issue 17's runs: full-size Flash on one GPU with the routed experts that do not fit kept in host
# memory (--cpu-experts auto), as a sparse skeleton with synthetic weights (no weight files):
# inspect's host-tier plan, then `dsv4 bench` prefill at 8K and decode at batch 1 and 16, ctx 4K.
# GPU_MEMORY_GIB caps the device memory dsv4 plans with (75: an H100-like budget on an H200);
# UTILIZATION sets --gpu-memory-utilization (default 0.9: fewer host experts as it rises);
# HOST_DECODE=gpu has the GPU read decode rows' host experts over the bus, split both at once
# (--host-decode), with CPU_SHARE of them on the host's cores (--host-cpu-share, split only);
# SHARES=1,0,0.5 instead times decode in each of those modes on one load (--host-cpu-shares: the
# cores' share, 1 = cpu, 0 = gpu, in between = split), which saves a load of minutes per mode.
# Needs the dsv4 binary built by gpu_suite.sh (build-gpu/). Logs go to $OUT.
#
# Usage (repo root, GPU host):
#   [GPU_MEMORY_GIB=75] [UTILIZATION=0.97] [HOST_DECODE=gpu|split] [CPU_SHARE=0.5] [SHARES=1,0,0.5] \
#     [BATCH=1,16] [PROMPT=8192] \
#     scripts/gpu_host_tier.sh [OUT_DIR]
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-/tmp/dsv4-gpu}}
bin="$repo/build-gpu/dsv4"
model=/tmp/dsv4-flash-full
cap=${GPU_MEMORY_GIB:-}
util=${UTILIZATION:-0.9}
decode=${HOST_DECODE:-cpu}
share=${CPU_SHARE:-}
shares=${SHARES:-}
[ -n "$shares" ] && decode="shares_${shares//,/_}"
log="$out/host_tier${cap:+_$cap}_${util}_${decode}${share:+_$share}.txt"
mkdir -p "$out"
: > "$log"
{ nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv; nproc; free -g | head -2; } >> "$log" 2>&1
[ -f "$model/config.json" ] || "$bin" make-skeleton "$model" --family flash --mtp 0 >> "$log" 2>&1
# inspect plans with the usable GiB of the bench below (the utilisation's share of the card, or the cap).
gib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i 0 | awk -v u="$util" '{ printf "%d", $1 * u / 1024 }')
"$bin" inspect -m "$model" --gpu-gib "${cap:-$gib}" --context 16384 >> "$log" 2>&1
# A run just before this one (a killed bench, say) may still be handing back tens of GB: wait for
# the card to be empty, up to a minute, so that the plan below sees the whole card.
for _ in $(seq 60); do
  used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0)
  [ "$used" -lt 1024 ] && break
  echo "waiting for the card to empty: $used MiB in use" >> "$log"
  sleep 1
done
if [ -n "$shares" ]; then modes=(--host-cpu-shares "$shares"); else modes=(--host-decode "$decode" ${share:+--host-cpu-share "$share"}); fi
echo "== bench flash, one GPU, --cpu-experts auto, --gpu-memory-utilization $util, ${modes[*]}${cap:+, --gpu-memory $cap}" >> "$log"
"$bin" bench -m "$model" --backend cuda --synthetic-weights 1 --cpu-experts auto ${cap:+--gpu-memory "$cap"} \
  --gpu-memory-utilization "$util" "${modes[@]}" \
  --ctx-size 16384 --max-seqs 16 --kv-cache-tokens 70000 --prompt "${PROMPT:-8192}" --batch "${BATCH:-1,16}" --ctx 4096 \
  --steps 8 >> "$log" 2>&1
status=$?
grep -E "host tier|GPU:|decode token|per token|loaded|prefill|^ +[0-9]+ +[0-9]+ |error|needs" "$log"
exit $status
