// The FP8 GEMV of the host's vector units: rows of an FP8 weight with 128×128 block scales (§11.2)
// times a few FP32 activation rows, 16 columns at a time decoded in registers and multiplied
// straight into the accumulators, never expanded to an FP32 tile in memory. linear_rows uses it
// for the CPU backend's FP8 linears (attention, shared experts, the dense layers).
//
// Its arithmetic is exactly that of expanding the rows with WeightMatrix::dequant_rows (the E4M3
// value times the block scale, one rounding) and taking the CPU backend's 16-lane dot
// (cpu/tile_dot.h), so it is bit-identical to the expanded path. The decode: an E4M3 byte's bits
// moved into an F16 are its value · 2^-8 exactly (subnormals too), the hardware converts the F16
// to FP32 (F16C), and one multiply by 256 · scale gives the dequantiser's product. Blocks where
// that shortcut would differ — an E4M3 NaN byte, or a scale whose 256-fold overflows — are
// expanded by the dequantiser instead.
#pragma once

#include <cstdint>

#include "model/quant.h"

namespace dsv4 {

// Whether this host runs the kernel (x86-64 with AVX2 and F16C); where not, linear_rows expands.
bool fp8_fused_available();

// y[t·y_stride + i] = x[t·K : (t+1)·K] · W[r0 + i]  for t < n, i < nr, where K = W.cols.
// W is kFP8Block with K % 16 == 0; a UE8M0 NaN scale byte raises the dequantiser's error.
void fp8_rows_dot(const WeightMatrix& w, int64_t r0, int64_t nr, const float* x, int64_t n, float* y,
                  int64_t y_stride);

}  // namespace dsv4
