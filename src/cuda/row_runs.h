// How a pass's rows split for the kernels whose choice must not depend on the rest of the step
// (batch invariance, tests/cuda/batched_runtime.cpp): matmul segments (StepContext::segments) and
// runs of one row class (step.h row_runs: the prefill class of long prompt chunks, the decode
// class of every other row).
#pragma once

namespace dsv4::cuda {

// Rows [first, first + n) of a pass that one matmul call covers (see StepContext::segments).
struct RowRange {
  int first = 0, n = 0;
};

// Rows [first, first + n) of one class: `prefill` for a long chunk's rows (which kernels take
// them is the caller's: FP8 experts, the BF16-key attention), else decode.
struct RowRun {
  int first = 0, n = 0;
  bool prefill = false;
};

}  // namespace dsv4::cuda
