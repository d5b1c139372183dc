// BF16-weight GEMV in FP32 for the unquantised linears: router gate (§8.1), compressor
// wkv/wgate (§5), indexer weights_proj (§6) and the LM head (§9). Quantised weights: gemv_fp8.cuh,
// gemv_mxfp4.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace dsv4::cuda {

// y[m][n] = Σ_k float(x[m][k]) · float(w[n][k]) in FP32 (the reference upcasts both).
struct GemvBf16Params {
  const __nv_bfloat16* w = nullptr;  // [N, K] bf16
  const __nv_bfloat16* x = nullptr;  // [M, K] bf16
  float* y = nullptr;                // [M, N] fp32
  int M = 0, N = 0, K = 0;
};

// 1 <= M <= kGemvMaxBatch (gemv_fp8.cuh), N >= 1, K % 8 == 0; pointers 16-byte aligned.
void launch_gemv_bf16(const GemvBf16Params& p, cudaStream_t stream);

}  // namespace dsv4::cuda
