// One dispatch for every dense linear of the step: y = x̃·Wᵀ for FP8 128×128-block weights (FP8
// 1×128 activations, §11.2 / §12) or BF16 weights, any number of rows. It picks the kernel
// (kernels/skinny_gemm.cuh for few rows, kernels/gemm_lt.cuh for many); the rules are matmul.cpp's.
//
// Row invariance (a row's result independent of the other rows of the call):
//   * M ≤ matmul_skinny_max_rows(kind): the skinny kernel, or for some FP8 shapes its wgmma
//     sibling (chosen from (N, K) alone). Its K order, K split and split-sum
//     order depend on (N, K) only, and rows never meet inside an MMA, so every row is
//     bit-identical for all M in [1, matmul_skinny_max_rows] — a decode row equals the same row in a
//     speculative-verify or batched-decode call.
//   * Larger M: cuBLASLt. Its rows differ from the skinny kernel's in the last bits (another K
//     order, and for FP8 its own block-scaled accumulation), and cuBLASLt may pick another
//     algorithm for another M, so rows are not promised to be bit-identical across M there.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace dsv4::cuda {

// kWgmma: the FP8 skinny GEMM on wgmma (kernels/skinny_wgmma.cuh; FP8 weights, M ≤ 128), row
// invariant like kSkinny but with other sums (FP8 tensor-core groups, not F16 MMAs); kAuto takes
// it instead of kSkinny for the narrow, deep FP8 matrices (matmul.cpp, rule 1b).
enum class MatmulPath { kAuto, kSkinny, kLt, kWgmma };

struct MatmulParams {
  const void* w = nullptr;           // [N, K] e4m3 (w_scale set) or bf16 (w_scale nullptr)
  const uint8_t* w_scale = nullptr;  // [ceil(N/128), K/128] ue8m0
  const void* x = nullptr;           // [M, K] e4m3 with FP8 weights, bf16 with BF16 weights
  const uint8_t* x_scale = nullptr;  // [M, K/128] ue8m0 (FP8)
  void* y = nullptr;                 // [M, N] bf16 (out_bf16) or fp32
  int M = 0, N = 0, K = 0;
  bool out_bf16 = true;
  MatmulPath path = MatmulPath::kAuto;  // tests and benchmarks pin a kernel; kAuto: the rules
};

// Rows up to which the skinny kernel runs (the row-invariant range above).
int matmul_skinny_max_rows(bool fp8);
// The kernel kAuto chooses for a problem (before any fallback).
MatmulPath matmul_choose(bool fp8, int M, int N, int K);
// Enqueues y = x·Wᵀ; returns the kernel that ran (kLt falls back to kSkinny when cuBLASLt has no
// algorithm for the problem). M = 0 enqueues nothing.
MatmulPath matmul(const MatmulParams& p, cudaStream_t stream);

// Two linears of the same activations (a and b agree on x, x_scale, M, K and out_bf16; paths
// kAuto): one launch when both take the wgmma path with the same split (Flash's wkv beside wq_a,
// the shared expert's w1 beside w3; matmul.cpp rule 1c), else matmul(a) then matmul(b). Each
// output's bits are matmul's either way. Returns whether it was one launch.
bool matmul_pair(const MatmulParams& a, const MatmulParams& b, cudaStream_t stream);

// wo_a (§4.5; grouped_out_proj.cuh's parameters and result) through cuBLASLt, for the rows of a
// long prompt chunk: per group, FP8 weights are expanded exactly to BF16 in `w_group` ([R, K],
// unused for BF16 weights), then a BF16 GEMM with FP32 accumulation reads the group's o columns
// and writes its z columns in place (row strides G·K and G·R). Returns false when cuBLASLt has
// no algorithm for a group's problem (shape or alignment); z may then be partly written, and the
// caller runs the skinny kernel over the same rows. The rule (attention_step.cpp) and its reason
// are in matmul.cpp.
struct GroupedOutProjParams;
bool grouped_out_proj_lt(const GroupedOutProjParams& p, __nv_bfloat16* w_group, cudaStream_t stream);

// The cuBLASLt workspace, allocated on the first large-M call: call this before capturing a
// CUDA graph whose steps may have more than matmul_skinny_max_rows rows (gemm_lt.cuh).
void matmul_reserve();
size_t matmul_workspace_bytes();

}  // namespace dsv4::cuda
