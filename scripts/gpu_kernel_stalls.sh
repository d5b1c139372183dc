#!/usr/bin/env bash
# Where one kernel's warps wait (issue 13's kernel work): Nsight Compute's full section set on one
# launch of the kernel matching REGEX inside CMD, written as the report's details, its SASS source
# page, and tools/ncu_stall_summary.py's summary of that page (instructions per loop iteration by
# opcode, stall reasons, the instructions that wait most). Three files in OUT_DIR: the device
# returns at most 8.
#
# Usage (repo root, GPU host, after gpu_suite.sh built build-gpu/):
#   [SKIP=1] scripts/gpu_kernel_stalls.sh OUT_DIR REGEX CMD...
# e.g. scripts/gpu_kernel_stalls.sh "$OUT" grouped_mxfp4_wgmma \
#        build-gpu/bench_cuda_moe_bench --quick --fp8-prefill --rows 8192
# SKIP launches of the kernel are let pass first (default 1: the bench's warm-up). ncu runs the SM
# at its base clock (1.42 GHz on an H100 SXM), so read its times as ratios, not against a bench.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: gpu_kernel_stalls.sh OUT_DIR REGEX CMD...}
regex=${2:?usage: gpu_kernel_stalls.sh OUT_DIR REGEX CMD...}
shift 2
mkdir -p "$out"
report=$(mktemp -d)/stalls
timeout 300 ncu -k "regex:$regex" --launch-skip "${SKIP:-1}" --launch-count 1 --set full --import-source no \
  -o "$report" "$@" > "$out/stalls_details.txt" 2>&1 || { echo "ncu failed: $out/stalls_details.txt"; exit 1; }
ncu -i "$report.ncu-rep" --print-details all >> "$out/stalls_details.txt" 2>&1
ncu -i "$report.ncu-rep" --page source --csv --print-source sass > "$out/stalls_sass.csv" 2>&1
python3 "$repo/tools/ncu_stall_summary.py" "$out/stalls_sass.csv" > "$out/stalls_summary.txt" 2>&1
rm -rf "$(dirname "$report")"
grep -E "Duration|Issue Active|Pipe Tensor Cycles|Warp Cycles Per Issued" "$out/stalls_details.txt" | head -8
head -40 "$out/stalls_summary.txt"
