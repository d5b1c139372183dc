// Grouped low-rank output projection wo_a (§4.5): z_g = A_g · o_g per group g, the reference's
// BF16 einsum (FP8 wo_a dequantised to BF16, §12) with FP32 accumulation. wo_b: matmul.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// z[t][g·R + r] = bf16( Σ_k o[t][g·K + k] · W[g·R + r][k] ), FP32 accumulation, K = (H/G)·d.
// FP8 weights dequantise exactly to BF16 (3 mantissa bits, power-of-two scale), so multiplying
// by the E4M3 value and its tile scale in FP32 is the reference's BF16 weight.
struct GroupedOutProjParams {
  const __nv_bfloat16* o = nullptr;       // [T, G·K] bf16 attention output (heads of group g contiguous)
  const uint8_t* w_fp8 = nullptr;         // [G·R, K] e4m3, with w_scale [ceil(G·R/128), K/128] ue8m0; or
  const uint8_t* w_scale = nullptr;
  const __nv_bfloat16* w_bf16 = nullptr;  // [G·R, K] bf16 (BF16 checkpoints); exactly one of w_fp8/w_bf16
  __nv_bfloat16* z = nullptr;             // [T, G·R] bf16
  int T = 0, G = 0, R = 0, K = 0;
};

// T >= 1, G >= 1, R >= 1 with R % 32 == 0 when G > 1; K % 128 == 0 with w_fp8 (one weight
// scale per 128 columns; the scale row is that of the absolute weight row g·R + r, so R < 128 may
// share a tile between groups), K % 64 == 0 with w_bf16; o and the weights 16-byte aligned. Runs
// on the skinny GEMM (one weight pass per 64 tokens; a token's result is the same for any T).
void launch_grouped_out_proj(const GroupedOutProjParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
