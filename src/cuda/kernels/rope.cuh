// Rotary position embedding on the last 64 dims of every head, interleaved pairs (§4.4), forward
// or inverse (conjugate) rotation, with the frequency table of the layer (main, or compress with
// YaRN). Which table a layer uses is model/config.h's rope_for(); tensors are the caller's.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace dsv4::cuda {

// ω_i for i = 0..rope_dim/2−1 of one table (§4.4): θ^(−2i/rope_dim), YaRN-blended when
// table.yarn (no magnitude scaling). Computed in double, rounded once to FP32.
std::vector<float> rope_inv_freq(const RopeParams& table, int rope_dim);

// y[2i] = x[2i]·cos(tω_i) − x[2i+1]·sin(tω_i), y[2i+1] = x[2i]·sin(tω_i) + x[2i+1]·cos(tω_i) on the
// rope slice [head_dim − rope_dim, head_dim) of each head; sin negated when inverse. The angle is
// the FP32 product t·ω_i, as the reference's FP32 outer(t, freqs).
struct RopeApplyParams {
  __nv_bfloat16* x = nullptr;      // [n_rows, n_heads, head_dim] bf16 (row stride row_stride), in place
  const int32_t* pos = nullptr;    // [n_rows] absolute position of each row
  const float* inv_freq = nullptr; // [rope_dim/2] from rope_inv_freq
  int n_rows = 0, n_heads = 0, head_dim = 0, rope_dim = 0;
  int64_t row_stride = 0;          // elements between consecutive rows (>= n_heads·head_dim)
  bool inverse = false;
};

void launch_rope(const RopeApplyParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
