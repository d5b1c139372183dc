// FP8-block GEMV for decode and small batches: y = x · Wᵀ with E4M3 weights in 128×128 UE8M0
// tiles (§11.2) and FP8 1×128 activations (§12), FP32 accumulation. MXFP4 experts: gemv_mxfp4.cuh.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// y[m][n] = Σ_k (q_x[m][k]·s_x[m][k/128]) · (q_w[n][k]·s_w[n/128][k/128]), accumulated in FP32
// as Σ_blocks s_x·s_w·(q_x·q_w) like the reference GEMM (§11.2).
struct GemvFp8Params {
  const uint8_t* w = nullptr;        // [N, K] e4m3
  const uint8_t* w_scale = nullptr;  // [ceil(N/128), K/128] ue8m0
  const uint8_t* x = nullptr;        // [M, K] e4m3
  const uint8_t* x_scale = nullptr;  // [M, K/128] ue8m0
  void* y = nullptr;                 // [M, N] fp32, or bf16 when out_bf16
  int M = 0, N = 0, K = 0;
  bool out_bf16 = false;             // the reference's FP8 linears return BF16
};

constexpr int kGemvMaxBatch = 8;  // small-M variant: every weight byte is read once for ≤ 8 rows

// 1 <= M <= kGemvMaxBatch, N >= 1, K % 128 == 0; pointers 16-byte aligned.
void launch_gemv_fp8(const GemvFp8Params& p, cudaStream_t stream);

}  // namespace dsv4::cuda
