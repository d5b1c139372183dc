// The dot products of linear_rows' expanded path (cpu/linear.h): every activation row times every
// row of an FP32 weight tile. The arithmetic is the CPU backend's contract for a linear, shared by
// the fused FP4 kernel (cpu/fp4_linear.h): FP32 products summed in 16 lanes (lane l takes columns
// ≡ l mod 16, one serial chain each), no fused multiply-add, then the lanes added in order 0..15
// onto +0, then the serial sum of the columns past the last whole 16.
//
// Two builds of it: plain C++ (the compiler vectorises it for the baseline x86-64, 4-wide), and
// AVX2 where the host has it (two weight rows × two activation rows per pass, so each load feeds
// two multiplies). They are bit-identical: the same operations in the same order per element.
#pragma once

#include <cstdint>

namespace dsv4 {

// The contract's final reduction, shared by every kernel that keeps it: the 16 lanes added in
// order onto +0 (so a lone −0 lane gives +0), then the serial sum of the columns past the last
// whole 16 (+0 when there are none).
inline float lane_sum(const float (&lanes)[16], float tail = 0.0f) {
  float s = 0.0f;
  for (float v : lanes) s += v;
  return s + tail;
}

// Whether this host runs the AVX2 build (x86-64 with AVX2).
bool tile_dot_avx2_here();

// y[t·y_stride + i] = dot(x[t·K : (t+1)·K], tile[i·K : (i+1)·K])  for t < n, i < nr.
// `avx2` must run here (tests compare both builds; everyone else takes the default).
void tile_rows_dot(const float* tile, int64_t nr, const float* x, int64_t n, int64_t K, float* y, int64_t y_stride,
                   bool avx2 = tile_dot_avx2_here());

}  // namespace dsv4
