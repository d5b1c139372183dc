// Dense NVFP4 GEMV for decode and small batches: y = x · Wᵀ with W packed E2M1 under per-16 E4M3
// scales and one F32 global scale (§11.6, ModelOpt re-quantisations of non-expert linears), every
// weight byte read once for all M rows, FP32 accumulation. Routed experts: gemv_mxfp4.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// An NVFP4 linear keeps the numerics of the linear it replaces (its activations are not
// re-quantised to FP4, so ModelOpt's input_scale is unused): the input is either the §12 FP8
// 1×128 activations of an FP8 linear (x_fp8 + x_scale, step.cpp linear_q) or the BF16
// activations of a BF16 linear taken exactly in FP32 (x_bf16, linear_f32). Weights dequantise
// exactly: y[m][n] = g · Σ_b s_w[n][b] · Σ_{k in block b} e2m1(w[n][k]) · x[m][k].
struct GemvNvfp4Params {
  const uint8_t* w = nullptr;            // [N, K/2] packed e2m1, low nibble = even k
  const uint8_t* w_scale = nullptr;      // [N, K/16] e4m3 (weight_scale)
  float global_scale = 0.0f;             // weight_scale_2
  const uint8_t* x_fp8 = nullptr;        // [M, K] e4m3, with x_scale; or
  const uint8_t* x_scale = nullptr;      // [M, K/128] ue8m0
  const __nv_bfloat16* x_bf16 = nullptr; // [M, K] bf16 (exactly one of x_fp8 / x_bf16)
  void* y = nullptr;                     // [M, N] fp32, or bf16 when out_bf16
  int M = 0, N = 0, K = 0;
  bool out_bf16 = false;
};

// 1 <= M <= kGemvMaxBatch (gemv_fp8.cuh), N >= 1; K % 128 == 0 with x_fp8, K % 32 == 0 with
// x_bf16; w and x 16-byte aligned, w_scale 2-byte aligned.
void launch_gemv_nvfp4(const GemvNvfp4Params& p, cudaStream_t stream);

}  // namespace dsv4::cuda
