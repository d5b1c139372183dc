// What the weight-streaming kernels (gemv_fp8, gemv_bf16, gemv_mxfp4, skinny_gemm) share: the
// L1-bypassing 16-byte weight load; the GEMVs also the BF16 dot product and the split-K scheme (a
// column's K range spread over kSplit consecutive warps whose partial sums meet in shared memory).
// The other dot products stay per family.
#pragma once

#include <cstdint>

#include "cuda/kernels/device_common.cuh"

namespace dsv4::cuda {

// Weights are read once per step: stream them past L1 so activations keep the cache.
__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// Σ of 8 BF16 × BF16 products in FP32 (exact products). BF16 -> FP32 is a 16-bit shift: the
// low half of each word is the even element.
__device__ __forceinline__ float dot8_bf16(const uint4& a, const uint4& b) {
  const uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    s = fmaf(__uint_as_float(av[i] << 16), __uint_as_float(bv[i] << 16), s);
    s = fmaf(__uint_as_float(av[i] & 0xffff0000u), __uint_as_float(bv[i] & 0xffff0000u), s);
  }
  return s;
}

// Reduces each warp's per-lane partial sums acc[0..kM) and, when kSplit > 1, the kSplit warps of
// one column (warps warp..warp+kSplit-1, `part` = warp % kSplit). Afterwards acc holds the column
// totals in lane 0 of the part-0 warp only. Every thread of the block must call it (it may sync).
template <int kWarps, int kM, int kSplit>
__device__ __forceinline__ void split_k_reduce(float (&acc)[kM], int warp, int lane, int part) {
  __shared__ float partial[kWarps][kM];
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    const float s = warp_sum(acc[m]);
    if constexpr (kSplit > 1) {
      if (lane == 0) partial[warp][m] = s;
    } else {
      acc[m] = s;
    }
  }
  if constexpr (kSplit > 1) {
    __syncthreads();
    if (part == 0 && lane == 0) {
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        acc[m] = 0.0f;
#pragma unroll
        for (int j = 0; j < kSplit; ++j) acc[m] += partial[warp + j][m];
      }
    }
  }
}

// Host heuristic: split a column over more warps until about kTargetWarps warps stream at once
// (H100: 132 SMs × 32 resident warps is ~4k; fewer leave HBM idle on narrow matrices such as
// wkv, N = 512), but never below two 16-byte chunks per lane of each warp.
constexpr int kSplitTargetWarps = 4096;
inline int split_k_for(int N, int n_chunks, int max_split) {
  int split = 1;
  while (split < max_split && int64_t(N) * split < kSplitTargetWarps &&
         n_chunks >= 2 * kWarpSize * split)
    split *= 2;
  return split;
}

}  // namespace dsv4::cuda
