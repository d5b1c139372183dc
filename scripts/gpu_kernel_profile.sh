#!/usr/bin/env bash
# Where a decode step's time goes, kernel by kernel (issues 12 and 13): Nsight Compute times every
# kernel of `dsv4 bench`'s decode at the given batch sizes (each kernel alone, L2 flushed between
# kernels, clocks left free), and tools/kernel_profile_summary.py sums the kernels of one decode
# step by name: the step the bench traces after its timed ones, run eagerly (the same kernels as a
# replayed step). The sum over-states the step a little (no overlap, cold L2), so it ranks
# kernels; `dsv4 bench` gives the step time.
#
# With PROMPT=P PASS=N it times one prefill pass instead: the process's N-th eager pass
# (DSV4_PROFILE_PASS, ncu --profile-from-start off). The bench warms up with a prompt of the same
# length, and passes hold 8,192 rows by default (--pass-rows), so PROMPT=8192 PASS=2 is the timed
# 8K prefill; with BENCH_ARGS="--pass-rows 2048", PASS=8 is its last quarter, its attention
# reading the 6K rows before it.
#
# Usage (repo root, GPU host, after gpu_suite.sh built build-gpu/):
#   [BENCH_ARGS="--synthetic-weights 1"] scripts/gpu_kernel_profile.sh OUT_DIR MODEL_DIR [BATCHES=1,64] [CTX=128]
#   [BENCH_ARGS=...] PROMPT=8192 PASS=2 scripts/gpu_kernel_profile.sh OUT_DIR MODEL_DIR
# BENCH_ARGS go to `dsv4 bench` as they are: "--synthetic-weights 1" for a header-only skeleton
# (`dsv4 make-skeleton`).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$1
model=$2
batches=${3:-1,64}
ctx=${4:-128}
bin="$repo/build-gpu/dsv4"
mkdir -p "$out"
if [ -n "${PASS:-}" ]; then
  csv="$out/ncu_prefill${PROMPT}_pass$PASS.csv"
  DSV4_PROFILE_PASS=$PASS timeout 540 ncu --profile-from-start off --clock-control none \
    --metrics gpu__time_duration.sum --csv --print-units base \
    "$bin" bench -m "$model" --backend cuda ${BENCH_ARGS:-} --prompt "$PROMPT" --batch 1 --ctx 16 --steps 1 \
    > "$csv" 2> "$out/ncu_prefill.log"
  echo "ncu prefill $PROMPT pass $PASS rc=$?" >> "$out/ncu_prefill.log"
  python3 "$repo/tools/kernel_profile_summary.py" "$csv" \
    --title "prefill of $PROMPT tokens, pass $PASS, $(basename "$model")" > "$out/kernels_prefill.txt" 2>&1
  cat "$out/kernels_prefill.txt"
  exit 0
fi
for b in ${batches//,/ }; do
  csv="$out/ncu_batch$b.csv"
  # --prompt 0: no separate prefill; decode() prefills the batch (ctx tokens each), captures the
  # graph in two warm-up steps, times one step and traces one more, eagerly: that traced step is
  # the one profiled (DSV4_PROFILE_PASS=traced), so the context's prefill is not timed kernel by
  # kernel (at batch 64 and ctx 4K it ran past the call's limit).
  DSV4_PROFILE_PASS=traced timeout 300 ncu --profile-from-start off --clock-control none \
    --metrics gpu__time_duration.sum --csv --print-units base \
    "$bin" bench -m "$model" --backend cuda ${BENCH_ARGS:-} --prompt 0 --batch "$b" --ctx "$ctx" --steps 1 \
    > "$csv" 2> "$out/ncu_batch$b.log"
  echo "ncu batch $b rc=$?" >> "$out/ncu_batch$b.log"
  python3 "$repo/tools/kernel_profile_summary.py" "$csv" --title "batch $b, ctx $ctx, $(basename "$model")" \
    > "$out/kernels_batch$b.txt" 2>&1
  cat "$out/kernels_batch$b.txt"
done
