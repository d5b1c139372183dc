// Large-M dense GEMMs through cuBLASLt: FP8 128×128-block weights × FP8 1×128 activations with
// the block-scaled modes (sm_90, CUDA ≥ 12.9), and BF16 × BF16; FP32 accumulation, BF16 or FP32
// out. The few-row kernel is skinny_gemm.cuh; which one runs is matmul.h's choice.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace dsv4::cuda {

// y[M, N] = x[M, K] · W[N, K]ᵀ (row-major, as the rest of the engine). cuBLASLt sees the
// column-major transpose: D[N, M] = op(A)·B with A = W (transposed, the "TN" layout FP8 needs),
// B = x. FP8: A takes CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, B VEC128_32F; both want FP32
// scales, made per call from the UE8M0 bytes into this device's workspace (one small kernel: the
// weight tile scales padded to [ceil(N/128), round_up(K/128, 4)], the activation scales transposed
// to [K/128, M] — the layouts cuBLAS documents for 2-D and 1-D block scaling).
struct LtGemmParams {
  bool fp8 = true;                   // false: BF16 weights and activations
  const void* w = nullptr;           // [N, K] e4m3 or bf16
  const uint8_t* w_scale = nullptr;  // [ceil(N/128), K/128] ue8m0 (fp8)
  const void* x = nullptr;           // [M, K] e4m3 or bf16
  const uint8_t* x_scale = nullptr;  // [M, K/128] ue8m0 (fp8)
  void* y = nullptr;                 // [M, N] bf16 (out_bf16) or fp32
  bool out_bf16 = true;
  int M = 0, N = 0, K = 0;
  // BF16 only: the row strides of x and y in elements, for operands that are column slices of
  // wider rows (a group of the grouped output projection); 0: K and N.
  int64_t ldx = 0, ldy = 0;
};

// Enqueues y = x·Wᵀ and returns true; returns false, enqueuing nothing, when cuBLASLt offers no
// algorithm for this problem (shape, alignment, or a library without block-scaled FP8), so the
// caller can take another kernel. Calls of M rows above the activation-scale capacity of the
// workspace run as several row chunks. One stream per device at a time: the per-call scale
// buffers are this device's, reused by every call.
bool lt_gemm(const LtGemmParams& p, cudaStream_t stream);

// Creates this device's handle and workspace now. lt_gemm does so on its first call, which must
// then not be inside a CUDA-graph capture (an allocation there fails the capture): call this
// before capturing a graph whose steps may take the cuBLASLt path.
void lt_reserve();
// Device bytes lt_reserve allocates (for a memory-fit check).
size_t lt_workspace_bytes();

}  // namespace dsv4::cuda
