#!/usr/bin/env bash
# Old against new in one device call (design.md "Speed principles": ratios measured in the same
# run): builds the tree that `scripts/gpu_ab.sh export REV` left in scratch/old next to this one,
# then runs one `dsv4 bench` command with each binary, alternating, ROUNDS times (default 2).
# The device copies untracked files that git does not ignore, so scratch/old travels with the
# working tree; delete it afterwards.
#
# Usage:
#   here:        scripts/gpu_ab.sh export REV            (e.g. main)
#   GPU host:    [ROUNDS=2] scripts/gpu_ab.sh run OUT_DIR BENCH_ARGS...
# The new binary is build-gpu/dsv4 (gpu_suite.sh builds it); the old one goes to build-old/. The
# export leaves models/ out (27 MB), so give BENCH_ARGS an explicit -m.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
case "${1:-}" in
  export)
    rev=${2:?usage: gpu_ab.sh export REV}
    rm -rf "$repo/scratch/old"
    mkdir -p "$repo/scratch/old"
    git -C "$repo" archive "$rev" CMakeLists.txt src bench tests fuzz scripts | tar -x -C "$repo/scratch/old"
    echo "scratch/old: $(git -C "$repo" rev-parse --short "$rev") ($rev)"
    ;;
  run)
    out=${2:?usage: gpu_ab.sh run OUT_DIR BENCH_ARGS...}
    shift 2
    mkdir -p "$out"
    log="$out/ab.txt"
    old_src="$repo/scratch/old" old_build="$repo/build-old" new_bin="$repo/build-gpu/dsv4"
    [ -d "$old_src" ] || { echo "no scratch/old: run 'scripts/gpu_ab.sh export REV' before the call" | tee "$log"; exit 1; }
    [ -x "$new_bin" ] || { echo "no $new_bin: run scripts/gpu_suite.sh first" | tee "$log"; exit 1; }
    if ls "$repo/.deb"/*.deb > /dev/null 2>&1; then
      # shellcheck disable=SC1090
      source <("$repo/scripts/device_deps.sh" unpack /tmp/dsv4-deps)
    fi
    args=(-DCMAKE_BUILD_TYPE=Release -DDSV4_CUDA=ON)
    command -v ninja > /dev/null && args+=(-G Ninja)
    { cmake -S "$old_src" -B "$old_build" "${args[@]}" && cmake --build "$old_build" -j "$(nproc)" --target dsv4; } \
      > "$out/ab_build_old.txt" 2>&1 || { echo "the old tree did not build: ab_build_old.txt" | tee "$log"; exit 1; }
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
  *)
    echo "usage: gpu_ab.sh export REV | gpu_ab.sh run OUT_DIR BENCH_ARGS..." >&2
    exit 2
    ;;
esac
