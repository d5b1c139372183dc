// The MoE output sum (§8.4): routed expert outputs plus the shared expert, in FP32, cast to BF16.
// The experts themselves are gemv_*.cuh + swiglu.cuh; the routing weights were applied before w2.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// out[t] = bf16( Σ_i routed[t·k + i] + shared[t] ), FP32 sum.
// Order (the reference's MoE.forward, §8.4): y = 0 (FP32); for each expert id in ascending order,
// y += that expert's output; then y += shared; then the BF16 cast. With expert_ids the kernel adds
// token t's k rows in ascending expert id (equal ids, which only a hash table could produce, in
// slot order), reproducing the reference bit for bit; without, in slot order i = 0..k−1 (the same
// sum up to FP32 rounding, i.e. an occasional 1-ulp BF16 difference).
struct MoeCombineParams {
  const __nv_bfloat16* routed = nullptr;  // [T·k, D] bf16 w2 outputs, one row per selection
  const __nv_bfloat16* shared = nullptr;  // [T, D] bf16 shared expert output
  __nv_bfloat16* out = nullptr;           // [T, D]
  int T = 0, k = 0, D = 0;
  const int32_t* expert_ids = nullptr;    // [T·k] expert of each routed row (router output), or nullptr
};

// T >= 0, 1 <= k <= kMaxCombineK, D >= 1.
constexpr int kMaxCombineK = 16;
void launch_moe_combine(const MoeCombineParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
