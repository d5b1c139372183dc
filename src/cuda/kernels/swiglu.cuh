// Clamped SwiGLU of the routed and shared experts (§8.2, §8.3), with the routing weight applied
// before w2 and an optional fused FP8 1×128 quantisation of the result for the w2 projection
// (§12). The w1/w3/w2 projections are moe_grouped_gemm.cuh (routed) and step.h's linears (shared).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// h = bf16(w_row · silu(min(g, limit)) · clamp(v, −limit, limit)), FP32 math; g, v are the BF16
// outputs of w1 and w3 (the reference's FP8/FP4 linears return BF16, then .float()).
struct SwigluParams {
  const __nv_bfloat16* gate = nullptr;  // [n_rows, I] bf16 (x·w1ᵀ)
  const __nv_bfloat16* up = nullptr;    // [n_rows, I] bf16 (x·w3ᵀ)
  const float* row_weight = nullptr;    // [n_rows] routing weight (§8.2), or nullptr (shared expert)
  __nv_bfloat16* h = nullptr;           // [n_rows, I] bf16
  uint8_t* q = nullptr;                 // [n_rows, I] e4m3, or nullptr
  uint8_t* q_scale = nullptr;           // [n_rows, I/128] ue8m0, with q
  __nv_bfloat16* fake = nullptr;        // [n_rows, I] bf16(q·scale), with q: the quantised values
                                        // for BF16 w2 weights (exact in BF16), or nullptr
  int n_rows = 0, I = 0;
  // Device int32 (the grouped rows of a dispatch plan, plan.offsets + E): rows at or past it are
  // not touched; nullptr: all n_rows. The launch is shaped by n_rows (graph-capturable).
  const int32_t* n_rows_active = nullptr;
  float limit = 10.0f;                  // swiglu_limit
};

// I >= 1, n_rows >= 0; with q, I % 128 == 0.
void launch_swiglu(const SwigluParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
