// The FP4 GEMV of the host's vector units: rows of an MXFP4 (§11.3) or NVFP4 (§11.6) weight times
// a few FP32 activation rows, each 8 columns of the weight decoded in AVX2 registers (a magnitude
// lookup, the sign bit, the block scale) and multiplied straight into the accumulators, never
// expanded to an FP32 tile in memory. It is the kernel that routed experts kept in host memory
// need (issue 17), and linear_rows uses it for every FP4 linear of the CPU backend.
//
// Its arithmetic is exactly that of expanding the row with WeightMatrix::dequant_rows and taking
// linear.cpp's 16-lane dot: the same FP32 weights (e2m1 · scale, then · global scale for NVFP4),
// the same products, the same per-lane sums in column order, the same final lane sum, and no
// fused multiply-add. So it is bit-identical to the expanded path, and the CPU backend's
// bit-for-bit tests (chunking, batching, rollback) do not depend on which path ran.
#pragma once

#include <cstdint>

#include "model/quant.h"

namespace dsv4 {

// Whether this host runs the fused kernel (x86-64 with AVX2); where not, linear_rows expands rows.
bool fp4_fused_available();

// y[t·y_stride + i] = x[t·K : (t+1)·K] · W[r0 + i]  for t < n, i < nr, where K = W.cols.
// W is MXFP4 or NVFP4; a NaN MXFP4 scale byte raises the dequantiser's error naming the tensor.
void fp4_rows_dot(const WeightMatrix& w, int64_t r0, int64_t nr, const float* x, int64_t n, float* y,
                  int64_t y_stride);

}  // namespace dsv4
