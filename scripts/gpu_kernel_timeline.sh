#!/usr/bin/env bash
# Where a replayed decode step's wall time goes (issues 12 and 13), on the GPU's own clock: runs
# `dsv4 bench` once plain and once under the CUPTI timeline library (bench/timeline/), for each
# batch size, and splits each replayed step into its kernels' exclusive times and the idle gaps
# between them (tools/kernel_timeline_summary.py). Unlike gpu_kernel_profile.sh (Nsight Compute,
# every kernel alone with a cold L2), this is the replay itself: warm L2, launch overlap and all.
# The plain run's ms/step beside the traced one's shows what the tracing costs.
#
# Usage (repo root, GPU host; builds dsv4 and the library in build-gpu/ unless they are there):
#   [BENCH_ARGS="--synthetic-weights 1"] scripts/gpu_kernel_timeline.sh OUT_DIR MODEL_DIR [BATCHES=1,64] [CTX=4096] [STEPS=16]
# Writes OUT_DIR/timeline_batchB.md (the summary, with the median replay listed record by record),
# OUT_DIR/timeline_bench.txt (both benches' output, each batch size) and the raw timelines,
# OUT_DIR/timelines.tar.gz.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$1
model=$2
batches=${3:-1,64}
ctx=${4:-4096}
steps=${5:-16}
build="$repo/build-gpu"
lib="$build/libdsv4_kernel_timeline.so"
mkdir -p "$out"
if [ ! -x "$build/dsv4" ] || [ ! -f "$lib" ]; then
  if ls "$repo/.deb"/*.deb > /dev/null 2>&1; then  # the -dev packages the host lacks (device_deps.sh)
    # shellcheck disable=SC1090
    source <("$repo/scripts/device_deps.sh" unpack /tmp/dsv4-deps)
  fi
  args=(-DCMAKE_BUILD_TYPE=Release -DDSV4_CUDA=ON)
  command -v ninja > /dev/null && args+=(-G Ninja)
  { cmake -S "$repo" -B "$build" "${args[@]}" &&
    cmake --build "$build" -j "$(nproc)" --target dsv4 dsv4_kernel_timeline; } > "$out/timeline_build.txt" 2>&1 ||
    { echo "build failed: timeline_build.txt"; exit 1; }
fi
log="$out/timeline_bench.txt"
mkdir -p /tmp/dsv4-timelines
: > "$log"
for b in ${batches//,/ }; do
  run=("$build/dsv4" bench -m "$model" --backend cuda ${BENCH_ARGS:-} --prompt 0 --batch "$b" --ctx "$ctx" --steps "$steps")
  echo "== batch $b, plain: ${run[*]}" >> "$log"
  "${run[@]}" >> "$log" 2>&1
  echo "rc=$?" >> "$log"
  tsv="/tmp/dsv4-timelines/timeline_batch$b.tsv"
  echo "== batch $b, traced" >> "$log"
  CUDA_INJECTION64_PATH="$lib" DSV4_KERNEL_TIMELINE="$tsv" "${run[@]}" >> "$log" 2>&1
  echo "rc=$?" >> "$log"
  python3 "$repo/tools/kernel_timeline_summary.py" "$tsv" --listing > "$out/timeline_batch$b.md" 2>&1
  head -40 "$out/timeline_batch$b.md"
done
tar -czf "$out/timelines.tar.gz" -C /tmp/dsv4-timelines .
cat "$log"
