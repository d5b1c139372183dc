#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/*.cpp, clang, ASan+UBSan) in build-fuzz and runs each for a
# bounded time, starting from the committed seed corpus fuzz/corpus/<target>/.
# Usage: bash scripts/fuzz.sh SECONDS   (per target; scripts/test.sh uses 20)
# New corpus entries go to a temporary folder, never into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
jobs=$(nproc)

CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDSV4_FUZZ=ON -DDSV4_CUDA=OFF -DDSV4_TESTS=OFF >/dev/null
targets=()
for src in fuzz/*.cpp; do
  targets+=("$(basename "$src" .cpp)")
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
# All targets in one build keeps every core busy; only when that fails, one target at a time, so
# an area whose code does not build with clang fails its own target (and the script) without
# keeping the other parsers from being fuzzed.
built=()
if cmake --build build-fuzz -j"$jobs" --target "${targets[@]}" >"$work/build.log" 2>&1; then
  built=("${targets[@]}")
else
  for t in "${targets[@]}"; do
    if cmake --build build-fuzz -j"$jobs" --target "$t" >"$work/$t.build.log" 2>&1; then
      built+=("$t")
    else
      tail -n 30 "$work/$t.build.log"
      echo "== fuzz $t: BUILD FAILED"
      status=1
    fi
  done
fi

# One target: its report goes to $work/$t.report, its exit status to $work/$t.rc.
fuzz_one() {
  local t=$1 seeds=() rc=0
  mkdir -p "$work/$t"
  [ -d "fuzz/corpus/$t" ] && seeds=("fuzz/corpus/$t")
  # -rss_limit_mb: a parser that allocates 2 GB on hostile input is a finding, not a pass.
  ./build-fuzz/"$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$work/$t-" "$work/$t" "${seeds[@]}" 2>"$work/$t.log" || rc=$?
  {
    echo "== fuzz $t (${seconds}s)"
    if ((rc)); then
      tail -n 40 "$work/$t.log"
      for a in "$work/$t"-*; do
        [ -e "$a" ] && { mkdir -p build-fuzz/artifacts; cp "$a" build-fuzz/artifacts/; echo "artifact: build-fuzz/artifacts/$(basename "$a")"; }
      done
    else
      grep -E "stat::number_of_executed_units|Done" "$work/$t.log" | tail -n 2
    fi
  } >"$work/$t.report"
  echo "$rc" >"$work/$t.rc"
}

# A libFuzzer run uses one core: as many at once as there are cores, each still fuzzing for the
# full time on its own core.
for t in "${built[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
  fuzz_one "$t" &
done
wait
for t in "${built[@]}"; do
  cat "$work/$t.report" 2>/dev/null || echo "== fuzz $t: no report"
  [ "$(cat "$work/$t.rc" 2>/dev/null)" = 0 ] || status=1
done
exit $status
