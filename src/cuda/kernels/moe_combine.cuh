// The MoE output sum (§8.4): routed expert outputs plus the shared expert, in FP32, cast to BF16,
// back in row order. The experts are moe_grouped_gemm.cuh + swiglu.cuh (routing weights applied
// before w2); the grouped order they write in is moe_dispatch.cuh's.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// out[t] = bf16( Σ_i routed[row(t, i)] + shared[t] ), FP32 sum, row(t, i) = routed_row[t·k + i]
// (a dispatch plan's pos_of: the grouped row of pick i of row t) or t·k + i.
// Order (the reference's MoE.forward, §8.4): y = 0 (FP32); for each expert id in ascending order,
// y += that expert's output; then y += shared; then the BF16 cast. With expert_ids the kernel adds
// row t's k outputs in ascending expert id (equal ids, which only a hash table could produce, in
// slot order), reproducing the reference bit for bit; without, in slot order i = 0..k−1 (the same
// sum up to FP32 rounding, i.e. an occasional 1-ulp BF16 difference). Either way the sum reads
// only row t's own outputs in a fixed order: a row's result does not depend on the batch.
struct MoeCombineParams {
  const __nv_bfloat16* routed = nullptr;  // [*, D] bf16 w2 outputs (grouped order with routed_row)
  const __nv_bfloat16* shared = nullptr;  // [T, D] bf16 shared expert output
  __nv_bfloat16* out = nullptr;           // [T, D]
  int T = 0, k = 0, D = 0;
  const int32_t* expert_ids = nullptr;    // [T·k] expert of each pick (router output), or nullptr
  // [T·k] routed row of each pick, or nullptr (t·k + i). A negative entry on a real row is a pick
  // without an expert (the router's −1 for a bad token): that row's output is NaN, visibly.
  const int32_t* routed_row = nullptr;
  // Device int32: rows at or past it are padding: out = shared (no routed reads). nullptr: all T.
  const int32_t* n_real = nullptr;
};

// T >= 0, 1 <= k <= kMaxCombineK, D >= 1.
constexpr int kMaxCombineK = 16;
void launch_moe_combine(const MoeCombineParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
