// BF16 GEMV kernel and launcher; see gemv_bf16.cuh for the contract.
// One warp (or kSplit warps) per output column, 16-byte (8 × BF16) coalesced weight loads that
// bypass L1.
#include "cuda/kernels/gemv_bf16.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/gemv_common.cuh"
#include "cuda/kernels/gemv_fp8.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunkElems = 8;  // 16 bytes of BF16
constexpr int kUnroll = 4;

__device__ __forceinline__ float dot8_bf16(const uint4& a, const uint4& b) {
  const uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    // BF16 -> FP32 is a 16-bit shift: low half = even element.
    s = fmaf(__uint_as_float(av[i] << 16), __uint_as_float(bv[i] << 16), s);
    s = fmaf(__uint_as_float(av[i] & 0xffff0000u), __uint_as_float(bv[i] & 0xffff0000u), s);
  }
  return s;
}

// kSplit warps share one output column (split_k_reduce / split_k_for, gemv_common.cuh).
template <int kM, int kSplit>
__global__ void __launch_bounds__(kThreads) gemv_bf16_kernel(GemvBf16Params p) {
  constexpr int kWarps = kThreads / kWarpSize, kColsPerBlock = kWarps / kSplit;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int part = warp % kSplit;
  const int n = blockIdx.x * kColsPerBlock + warp / kSplit;
  const bool valid = n < p.N;  // no early return: the split reduction below synchronises
  const int n_chunks = p.K / kChunkElems;
  const __nv_bfloat16* w_row = p.w + int64_t(valid ? n : 0) * p.K;
  float acc[kM];
#pragma unroll
  for (int m = 0; m < kM; ++m) acc[m] = 0.0f;
  constexpr int kStride = kWarpSize * kSplit;
  for (int c0 = part * kWarpSize + lane; valid && c0 < n_chunks; c0 += kStride * kUnroll) {
    uint4 wv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kStride;
      if (c < n_chunks) wv[u] = load_stream(w_row + int64_t(c) * kChunkElems);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kStride;
      if (c >= n_chunks) break;
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        if (m >= p.M) break;
        const uint4 xv = __ldg(reinterpret_cast<const uint4*>(p.x + int64_t(m) * p.K) + c);
        acc[m] += dot8_bf16(wv[u], xv);
      }
    }
  }
  split_k_reduce<kWarps, kM, kSplit>(acc, warp, lane, part);
  if (!valid || part != 0 || lane != 0) return;
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    if (m >= p.M) break;
    p.y[int64_t(m) * p.N + n] = acc[m];
  }
}

template <int kM, int kSplit>
void launch_ms(const GemvBf16Params& p, cudaStream_t stream) {
  constexpr int kColsPerBlock = kThreads / kWarpSize / kSplit;
  gemv_bf16_kernel<kM, kSplit><<<(p.N + kColsPerBlock - 1) / kColsPerBlock, kThreads, 0, stream>>>(p);
  DSV4_CUDA_CHECK_LAUNCH();
}

template <int kM>
void launch_m(const GemvBf16Params& p, cudaStream_t stream) {
  switch (split_k_for(p.N, p.K / kChunkElems, kThreads / kWarpSize)) {
    case 1: return launch_ms<kM, 1>(p, stream);
    case 2: return launch_ms<kM, 2>(p, stream);
    case 4: return launch_ms<kM, 4>(p, stream);
    default: return launch_ms<kM, 8>(p, stream);
  }
}

}  // namespace

void launch_gemv_bf16(const GemvBf16Params& p, cudaStream_t stream) {
  DSV4_CHECK(p.w && p.x && p.y);
  DSV4_CHECK_MSG(p.M >= 1 && p.M <= kGemvMaxBatch, "M=", p.M);
  DSV4_CHECK_MSG(p.N >= 1 && p.K >= kChunkElems && p.K % kChunkElems == 0, "N=", p.N, " K=", p.K);
  DSV4_CHECK(reinterpret_cast<uintptr_t>(p.w) % 16 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0);
  if (p.M == 1) launch_m<1>(p, stream);
  else if (p.M == 2) launch_m<2>(p, stream);
  else if (p.M <= 4) launch_m<4>(p, stream);
  else launch_m<8>(p, stream);
}

}  // namespace dsv4::cuda
