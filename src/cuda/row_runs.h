// How a pass's rows split for the kernels whose choice must not depend on the rest of the step
// (batch invariance, tests/cuda/batched_runtime.cpp): matmul segments (StepContext::segments) and
// runs of one row class (the prefill class of long prompt chunks, the decode class of every other
// row).
#pragma once

#include <functional>
#include <span>
#include <vector>

namespace dsv4::cuda {

// Rows [first, first + n) of a pass that one matmul call covers (see StepContext::segments).
struct RowRange {
  int first = 0, n = 0;
};

// Rows [first, first + n) of one class: `prefill` for one long chunk's rows (which kernels take
// them is the caller's: FP8 experts, the BF16-key attention, wo_a through cuBLASLt), else decode.
struct RowRun {
  int first = 0, n = 0;
  bool prefill = false;
  bool operator==(const RowRun&) const = default;
};

// The T rows of a pass with matmul segments `segments` in runs of one class: a chunk longer than
// kInvariantSliceRows (a segment of its own, step.h) for which prefill_class(n) holds is a
// prefill run, one per chunk (the attention gathers each chunk's keys); every other row joins
// decode runs, adjacent ones merged. Without segments (a decode graph's pass), one decode run
// [0, T). A row's class is its chunk's, which does not depend on what else is in the step.
// Segments that do not tile [0, T) from row 0 are an internal error.
std::vector<RowRun> row_runs(std::span<const RowRange> segments, int T, const std::function<bool(int n)>& prefill_class);

}  // namespace dsv4::cuda
