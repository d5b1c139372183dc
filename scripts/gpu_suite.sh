#!/usr/bin/env bash
# The GPU suite on the GPU host (device README: few, full calls): configure and build the CUDA
# targets, run the CUDA op-parity tests, run them again under compute-sanitizer memcheck and
# racecheck, and run the GEMV bandwidth and attention benchmarks. Logs go to $OUT, one per step that runs (the
# device returns ≤ 8 files: each part below writes ≤ 6).
# What the tests check is tests/cuda's business; carried build dependencies are device_deps.sh's.
#
# Usage (repo root, GPU host):  [GPU_SUITE_SKIP="..."] [GPU_SUITE_DEADLINE=S] scripts/gpu_suite.sh [OUT_DIR]
# (OUT_DIR default: $OUT, else /tmp/dsv4-gpu)
# The steps no longer fit one 10-minute device call (2026-12-04: tests 216 s; memcheck over the
# model-level tests alone ran past 400 s), so run the suite in parts, each call building first
# (~60 s; the build is reused while the machine stays warm):
#   1. GPU_SUITE_SKIP="memcheck memcheck_fwd memcheck_fwd2 racecheck"   build, tests, bench, decode
#   2. GPU_SUITE_SKIP="tests memcheck_fwd memcheck_fwd2 bench decode"   op-level memcheck, racecheck
#   3. GPU_SUITE_SKIP="tests memcheck memcheck_fwd2 racecheck bench decode"   model-level memcheck, part 1
#   4. GPU_SUITE_SKIP="tests memcheck memcheck_fwd racecheck bench decode"    model-level memcheck, part 2
# Device run:  run(command='scripts/gpu_suite.sh "$OUT"', carry=[".deb", ".prebuilt"]) — .prebuilt
# (git-ignored via .git/info/exclude) may hold test_cuda/bench_cuda_gemv_bench built here, used only
# if the device build fails. The summary (printed last) lists each step's rc and time.
set -uo pipefail
export NCCL_NVLS_ENABLE=0  # NVLink multicast stays off (collective.h), also for compute-sanitizer's children
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-/tmp/dsv4-gpu}}
mkdir -p "$out"
build="$repo/build-gpu"
jobs=$(nproc 2>/dev/null || echo 16)
summary="$out/summary.txt"
: > "$summary"
# GPU_SUITE_SKIP="memcheck racecheck ..." leaves steps out (one device call is at most 10 minutes).
# GPU_SUITE_DEADLINE=S: the call has S seconds in all (a lease shorter than the steps' limits): each
# step's limit is cut to what is left, and a step with less than a minute left is skipped, so that
# the steps before it still come back (the summary says which were cut or skipped).
skip=" ${GPU_SUITE_SKIP:-} "
deadline=${GPU_SUITE_DEADLINE:-}
step() {  # step NAME LOG TIMEOUT_S CMD...: run, record rc and seconds in the summary
  local name=$1 log=$2 limit=$3
  shift 3
  if [[ "$skip" == *" $name "* ]]; then
    printf '%-12s skipped (GPU_SUITE_SKIP)\n' "$name" >> "$summary"
    return 0
  fi
  if [ -n "$deadline" ]; then
    local left=$((deadline - SECONDS))
    if [ "$left" -lt 60 ]; then
      printf '%-12s skipped (GPU_SUITE_DEADLINE: %ds left)\n' "$name" "$left" >> "$summary"
      return 0
    fi
    if [ "$left" -lt "$limit" ]; then
      printf '%-12s limit cut from %ds to %ds (GPU_SUITE_DEADLINE)\n' "$name" "$limit" "$left" >> "$summary"
      limit=$left
    fi
  fi
  local t0=$SECONDS
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  printf '%-12s rc=%-3d %4ds  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$(basename "$log")" >> "$summary"
  return $rc
}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  nvcc --version | tail -2
  cmake --version | head -1
  c++ --version | head -1
  command -v compute-sanitizer || echo "compute-sanitizer: not found"
  python3 -c "import nvidia.nccl as m; print('nccl wheel:', m.__path__[0])" 2>&1 || echo "nccl wheel: none"
  grep PRETTY_NAME /etc/os-release
} > "$out/env.txt" 2>&1

# Dependencies the image lacks, unpacked from the carried .deb files (never installed into /).
if ls "$repo/.deb"/*.deb > /dev/null 2>&1; then
  # shellcheck disable=SC1090
  source <("$repo/scripts/device_deps.sh" unpack /tmp/dsv4-deps)
fi

cmake_args=(-DCMAKE_BUILD_TYPE=Release -DDSV4_CUDA=ON)
command -v ninja > /dev/null && cmake_args+=(-G Ninja)
command -v nvcc > /dev/null || cmake_args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
step configure "$out/build.txt" 300 cmake -S "$repo" -B "$build" "${cmake_args[@]}"
build_rc=$?
bin="$build"
if [ $build_rc -eq 0 ]; then
  step build "$out/build_targets.txt" 400 cmake --build "$build" -j "$jobs" --target test_cuda bench_cuda_gemv_bench \
    bench_cuda_attention_bench bench_cuda_decode_bench dsv4
  build_rc=$?
  cat "$out/build_targets.txt" >> "$out/build.txt" && rm -f "$out/build_targets.txt"
fi
if [ $build_rc -ne 0 ]; then
  # A failed device build must not waste the call: binaries built on the dev machine may be
  # carried in .prebuilt (same x86-64 ABI); say so loudly in the summary.
  if [ -x "$repo/.prebuilt/test_cuda" ]; then
    echo "DEVICE BUILD FAILED (see build.txt): running the carried .prebuilt binaries instead" | tee -a "$summary"
    bin="$repo/.prebuilt"
  else
    echo "build failed: see build.txt" | tee -a "$summary"
    exit 1
  fi
fi

# Registers, stack (spills) and shared memory per kernel, appended to the build log.
if [ "$bin" = "$build" ] && command -v cuobjdump > /dev/null; then
  { echo "== cuobjdump --dump-resource-usage"; cuobjdump --dump-resource-usage "$build/libdsv4_cuda.a" 2>&1 |
      grep -E "Function|REG" | paste - - | sed -E 's/[[:space:]]+/ /g'; } >> "$out/build.txt"
fi

step tests "$out/tests.txt" 500 "$bin/test_cuda" --gtest_color=no
# memcheck: out-of-bounds / misaligned accesses and leaks, in two steps: the op-level tests, and
# the model-level ones on shortened work (DSV4_CUDA_FORWARD_T: 140 tokens still cross the HCA
# window closing at 127 and dozens of CSA windows). ExpertParallel is left out: its NCCL loopback
# ranks did not finish in 380 s under memcheck (2026-12-04); its kernels are the single-rank ones.
# The one-rank NCCL tests are left out too: NCCL's communicator set-up probes for kernel images
# (ncclInitKernelsForDevice), and memcheck counts each cudaErrorNoKernelImageForDevice it gets as
# an error (16 on an H100, 2026-12-05), which would hide a real one behind rc=99 every run.
# racecheck: shared-memory hazards in the op tests, the same set as memcheck's (the model-level
# tests run the same kernels: under racecheck BatchedRuntime alone ran past 300 s, 2026-12-05; the
# sampler's many-draw distribution tests take over 5 minutes, its other tests run the same kernel;
# PerRowMatchesExactDistribution alone did not finish in the 230 s left of a step, 2026-12-06).
# racecheck skips cuBLASLt's own kernels (names nvjet_*, the matmul tests' reference path): it
# reported 36 hazards inside them on an H100 (2026-12-05), none in ours, and with them every run
# ended rc=99 whatever our kernels did.
# The model-level tests in two parts: under memcheck the whole set ran past 500 s (2026-12-07, an
# H100: BatchedRuntime 341 s, CudaForwardTest 80 s, the first six HostTier tests 70 s).
model_tests_a='BatchedRuntime.*:CudaNvfp4Dense.*:CudaForwardTest.*'
model_tests_b='HostTier.*:CudaSpeculative.*:CudaSyntheticWeights.*:*CudaForwardParity*'
model_tests="$model_tests_a:$model_tests_b"

memcheck=(compute-sanitizer --tool memcheck --leak-check full --error-exitcode 99 "$bin/test_cuda" --gtest_color=no)
step memcheck "$out/memcheck.txt" 400 "${memcheck[@]}" --gtest_filter="-$model_tests:ExpertParallel.*:CollectiveTest.Nccl*"
step memcheck_fwd "$out/memcheck_fwd.txt" 500 env DSV4_CUDA_FORWARD_T=140 "${memcheck[@]}" --gtest_filter="$model_tests_a"
step memcheck_fwd2 "$out/memcheck_fwd2.txt" 500 env DSV4_CUDA_FORWARD_T=140 "${memcheck[@]}" --gtest_filter="$model_tests_b"
step racecheck "$out/racecheck.txt" 400 \
  compute-sanitizer --tool racecheck --kernel-name-exclude kns=nvjet --error-exitcode 99 "$bin/test_cuda" --gtest_color=no \
  --gtest_filter="-$model_tests:ExpertParallel.*:CollectiveTest.Nccl*:*SamplingDistribution*:SamplingTest.PerRowMatchesExactDistribution"
# The GEMV table, then the attention kernels at prefill shapes (decode against prefill kernel).
step bench "$out/bench.txt" 300 bash -c '"$0/bench_cuda_gemv_bench" && "$0/bench_cuda_attention_bench"' "$bin"
step decode "$out/decode_bench.txt" 120 "$bin/bench_cuda_decode_bench" "$repo/models/nano" 512 256

echo >> "$summary"
grep -E "^\[  (PASSED|FAILED) |tests? ran|^\[  FAILED|^\[(parity|graph|sample|fit)\]" "$out/tests.txt" >> "$summary" 2>/dev/null
grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$out/memcheck.txt" "$out/memcheck_fwd.txt" "$out/memcheck_fwd2.txt" "$out/racecheck.txt" >> "$summary" 2>/dev/null
cat "$out/bench.txt" "$out/decode_bench.txt" >> "$summary" 2>/dev/null
cat "$summary"
