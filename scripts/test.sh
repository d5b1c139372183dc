#!/usr/bin/env bash
# Builds and runs the whole CPU test suite: a release build, then the same suite under
# AddressSanitizer + UndefinedBehaviorSanitizer, then each fuzz target for a bounded time.
# Usage: bash scripts/test.sh   (after scripts/setup.sh, which it calls)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc)
# The tests write under a temporary directory of this run's own, removed at the end, so nothing a
# crashed or killed test leaves behind can meet a later run's test (process ids are reused).
TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/dsv4-test.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
# Each phase prints the seconds since the start: CI must stay under 40 minutes on 2 cores.
phase() { echo "== $* (at ${SECONDS}s)"; }

phase "release build + tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

phase "ASan + UBSan build + tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSV4_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
# Every test runs here too; the slowest shorten themselves (token-by-token plans, the tail of the
# nano goldens, the Pro skeleton) and say so: a skipped case is listed by ctest, a shortened one
# prints "[sanitizer] left out: ..." (tests/support/sanitizer.h), collected below.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs"
echo "== left out under the sanitizers (the release run above covers them)"
grep -h '^\[sanitizer\] left out: ' build-asan/Testing/Temporary/LastTest.log | sort -u || true

echo "== left in the temporary directory by the tests (each should remove what it writes)"
find "$TMPDIR" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort

phase "fuzz targets (bounded)"
bash scripts/fuzz.sh "${DSV4_FUZZ_SECONDS:-20}"
phase "done"
