// MXFP4 routed-expert GEMV for decode: y_s = x_s · W_{e(s)}ᵀ for each selected expert s, with
// packed E2M1 weights and per-32 UE8M0 scales (§11.3) expanded in registers, FP8 1×128
// activations (§12) and FP32 accumulation. Dense FP8 weights: gemv_fp8.cuh.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

struct GemvMxfp4Params {
  const uint8_t* w = nullptr;           // [n_experts, N, K/2] packed e2m1, low nibble = even k
  const uint8_t* w_scale = nullptr;     // [n_experts, N, K/32] ue8m0
  const int32_t* expert_idx = nullptr;  // [n_sel] expert of selection s; < 0: masked slot, y row = 0
  const uint8_t* x = nullptr;           // [x_per_sel ? n_sel : 1, K] e4m3
  const uint8_t* x_scale = nullptr;     // [x_per_sel ? n_sel : 1, K/128] ue8m0
  bool x_per_sel = false;               // false: one x for all selections (w1/w3); true: row s (w2)
  void* y = nullptr;                    // [n_sel, N] fp32, or bf16 when out_bf16
  int n_sel = 0, n_experts = 0, N = 0, K = 0;
  bool out_bf16 = false;
};

// 1 <= n_sel <= 65535 (grid y), N >= 1, K % 128 == 0 and K <= kMxfp4MaxK (x is staged in shared memory as FP32);
// an expert index >= n_experts yields a NaN row (visible, never an out-of-bounds read).
constexpr int kMxfp4MaxK = 8192;
void launch_gemv_mxfp4(const GemvMxfp4Params& p, cudaStream_t stream);

}  // namespace dsv4::cuda
