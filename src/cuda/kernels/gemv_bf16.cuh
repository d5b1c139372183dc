// BF16-weight GEMV in FP32 for the unquantised linears: router gate (§8.1), compressor
// wkv/wgate (§5), indexer weights_proj (§6), the LM head (§9) and the routed experts of BF16
// checkpoints (§8.2, one expert per output row). Quantised weights: gemv_fp8.cuh, gemv_mxfp4.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// y[m][n] = Σ_k float(x[m / sel_per_x][k]) · float(w_m[n][k]) in FP32 (the reference upcasts
// both), with w_m = w, or expert expert_idx[m] of w when expert_idx is set.
struct GemvBf16Params {
  const __nv_bfloat16* w = nullptr;     // [N, K] bf16, or [n_experts, N, K] with expert_idx
  const __nv_bfloat16* x = nullptr;     // [ceil(M / sel_per_x), K] bf16
  void* y = nullptr;                    // [M, N] fp32, or bf16 when out_bf16
  int M = 0, N = 0, K = 0;
  // [M] when set: row m of y uses expert expert_idx[m] (w = [n_experts, N, K]); < 0 → y row 0.
  const int32_t* expert_idx = nullptr;
  int n_experts = 0;
  int sel_per_x = 1;                    // row m of y reads x row m / sel_per_x (expert_idx only)
  bool out_bf16 = false;                // BF16 expert outputs feed the next op as BF16 (§12)
};

// N >= 1, K % 8 == 0; pointers 16-byte aligned. Without expert_idx 1 <= M <= kGemvMaxBatch
// (gemv_fp8.cuh) and sel_per_x == 1: every weight byte is read once for all rows. With
// expert_idx 1 <= M <= 65535 (grid y, one GEMV per row), sel_per_x >= 1 and n_experts >= 1; an
// expert index >= n_experts yields a NaN row (visible, never an out-of-bounds read).
void launch_gemv_bf16(const GemvBf16Params& p, cudaStream_t stream);

}  // namespace dsv4::cuda
