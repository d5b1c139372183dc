// FP4 routed-expert GEMV: y_s = x_{s/sel_per_x} · W_{e(s)}ᵀ for each selection s, with packed
// E2M1 weights expanded in registers under per-32 UE8M0 (MXFP4, §11.3) or per-16 E4M3 × global
// (NVFP4, §11.6) scales, FP8 1×128 activations (§12) and FP32 accumulation. One GEMV per
// selection: the MoE step now runs moe_grouped_gemm.cuh (each expert read once per step); this
// kernel stays as the independent per-selection oracle of tests/cuda/moe_step.cpp and the
// baseline of bench/cuda_moe_bench.cpp and cuda_gemv_bench.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

enum class ExpertWeightFormat { kMXFP4, kNVFP4 };

struct GemvMxfp4Params {
  const uint8_t* w = nullptr;           // [n_experts, N, K/2] packed e2m1, low nibble = even k
  // MXFP4: [n_experts, N, K/32] ue8m0. NVFP4: [n_experts, N, K/16] e4m3 (weight_scale).
  const uint8_t* w_scale = nullptr;
  const float* global_scale = nullptr;  // [n_experts] fp32 weight_scale_2 (NVFP4 only)
  ExpertWeightFormat format = ExpertWeightFormat::kMXFP4;
  const int32_t* expert_idx = nullptr;  // [n_sel] expert of selection s; < 0: masked slot, y row = 0
  const uint8_t* x = nullptr;           // [ceil(n_sel / sel_per_x), K] e4m3
  const uint8_t* x_scale = nullptr;     // [ceil(n_sel / sel_per_x), K/128] ue8m0
  int sel_per_x = 1;  // selection s reads x row s / sel_per_x (w1/w3 of T tokens × k picks: k; w2: 1)
  void* y = nullptr;                    // [n_sel, N] fp32, or bf16 when out_bf16
  int n_sel = 0, n_experts = 0, N = 0, K = 0;
  bool out_bf16 = false;
};

// 1 <= n_sel <= 65535 (grid y), sel_per_x >= 1, N >= 1, K % 128 == 0 and K <= kMxfp4MaxK (x is
// staged in shared memory as FP32); an expert index >= n_experts yields a NaN row (visible, never
// an out-of-bounds read).
constexpr int kMxfp4MaxK = 8192;
void launch_gemv_mxfp4(const GemvMxfp4Params& p, cudaStream_t stream);

}  // namespace dsv4::cuda
