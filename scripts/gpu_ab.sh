#!/usr/bin/env bash
# Old against new in one device call (design.md "Speed principles": ratios measured in the same
# run): builds the tree that `scripts/gpu_ab.sh export REV` left in scratch/old next to this one,
# then either runs one `dsv4 bench` command with each binary, alternating, ROUNDS times (default
# 2), or one `test_cuda` command with each (a test added after REV, or a kernel change a test
# should see). The device copies untracked files that git does not ignore, so scratch/old travels
# with the working tree; delete it afterwards.
#
# Usage:
#   here:        scripts/gpu_ab.sh export REV            (e.g. main)
#   GPU host:    [ROUNDS=2] scripts/gpu_ab.sh run OUT_DIR BENCH_ARGS...
#                scripts/gpu_ab.sh tests OUT_DIR TEST_CUDA_ARGS...   (environment variables pass through)
# The new binaries are build-gpu/dsv4 and build-gpu/test_cuda (gpu_suite.sh builds them); the old
# ones go to build-old/. The export leaves models/ out (27 MB), so give BENCH_ARGS an explicit -m;
# the old tests find the working tree's models/ and testdata/ through links.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
old_src="$repo/scratch/old" old_build="$repo/build-old"

# build_old OUT_DIR TARGET: configure and build TARGET in the exported tree; exits on failure.
build_old() {
  local out=$1 target=$2
  [ -d "$old_src" ] || { echo "no scratch/old: run 'scripts/gpu_ab.sh export REV' before the call" | tee -a "$out/ab.txt"; exit 1; }
  if ls "$repo/.deb"/*.deb > /dev/null 2>&1; then
    # shellcheck disable=SC1090
    source <("$repo/scripts/device_deps.sh" unpack /tmp/dsv4-deps)
  fi
  local args=(-DCMAKE_BUILD_TYPE=Release -DDSV4_CUDA=ON)
  command -v ninja > /dev/null && args+=(-G Ninja)
  { cmake -S "$old_src" -B "$old_build" "${args[@]}" && cmake --build "$old_build" -j "$(nproc)" --target "$target"; } \
    > "$out/ab_build_old.txt" 2>&1 || { echo "the old tree did not build: ab_build_old.txt" | tee -a "$out/ab.txt"; exit 1; }
}

case "${1:-}" in
  export)
    rev=${2:?usage: gpu_ab.sh export REV}
    rm -rf "$old_src"
    mkdir -p "$old_src"
    git -C "$repo" archive "$rev" CMakeLists.txt src bench tests fuzz scripts | tar -x -C "$old_src"
    echo "scratch/old: $(git -C "$repo" rev-parse --short "$rev") ($rev)"
    ;;
  run)
    out=${2:?usage: gpu_ab.sh run OUT_DIR BENCH_ARGS...}
    shift 2
    mkdir -p "$out"
    log="$out/ab.txt"
    new_bin="$repo/build-gpu/dsv4"
    [ -x "$new_bin" ] || { echo "no $new_bin: run scripts/gpu_suite.sh first" | tee "$log"; exit 1; }
    build_old "$out" dsv4
    : > "$log"
    for round in $(seq 1 "${ROUNDS:-2}"); do
      for which in old new; do
        bin=$new_bin
        [ "$which" = old ] && bin="$old_build/dsv4"
        echo "== round $round, $which: dsv4 bench $*" >> "$log"
        "$bin" bench "$@" >> "$log" 2>&1
        echo "rc=$?" >> "$log"
      done
    done
    grep -E "^==|prefill|FLOP|^ +[0-9]+ +[0-9]+ |host tier|rc=" "$log"
    ;;
  tests)
    out=${2:?usage: gpu_ab.sh tests OUT_DIR TEST_CUDA_ARGS...}
    shift 2
    mkdir -p "$out"
    new_bin="$repo/build-gpu/test_cuda"
    [ -x "$new_bin" ] || { echo "no $new_bin: run scripts/gpu_suite.sh first" | tee "$out/ab.txt"; exit 1; }
    ln -sfn "$repo/models" "$old_src/models"
    ln -sfn "$repo/testdata" "$old_src/testdata"
    build_old "$out" test_cuda
    for which in old new; do
      bin=$new_bin
      [ "$which" = old ] && bin="$old_build/test_cuda"
      "$bin" --gtest_color=no "$@" > "$out/tests_$which.txt" 2>&1
      echo "$which: rc=$? ($(grep -cE '^\[       OK \]' "$out/tests_$which.txt") passed, $(grep -cE '^\[  FAILED  \] [A-Za-z]' "$out/tests_$which.txt") failed lines)" \
        | tee -a "$out/ab.txt"
    done
    ;;
  *)
    echo "usage: gpu_ab.sh export REV | gpu_ab.sh run OUT_DIR BENCH_ARGS... | gpu_ab.sh tests OUT_DIR TEST_CUDA_ARGS..." >&2
    exit 2
    ;;
esac
