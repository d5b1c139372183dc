// FP8-block GEMV kernel and launcher; see gemv_fp8.cuh for the contract.
// One warp (or kSplit warps) per output column n: lanes stream the weight row in 16-byte chunks
// (16 E4M3 values, always inside one 128-wide scale block), coalesced across the warp, bypassing
// L1 since each weight byte is used once; x rows are re-read by every warp and stay cached.
#include "cuda/kernels/gemv_fp8.cuh"

#include <cuda_bf16.h>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/gemv_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;              // 8 warps = 8 output columns per block
constexpr int kChunkBytes = 16;            // one 16-byte load = 16 E4M3 values
constexpr int kChunksPerBlock = kFP8BlockSize / kChunkBytes;  // 8 chunks share a scale
constexpr int kUnroll = 4;                 // independent 16-byte loads in flight per lane
static_assert(kFP8BlockSize == kActBlockSize, "weight and activation scale blocks coincide along K");

__device__ __forceinline__ float dot16_e4m3(const uint4& a, const uint4& b) {
  const uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float2 fa = e4m3x2_to_float2(uint16_t(av[i] >> (16 * h)));
      const float2 fb = e4m3x2_to_float2(uint16_t(bv[i] >> (16 * h)));
      s = fmaf(fa.x, fb.x, s);
      s = fmaf(fa.y, fb.y, s);
    }
  }
  return s;
}

// kSplit warps share one output column, each taking every kSplit-th 512-byte slice of the row
// (so every warp-wide load stays 512 contiguous bytes); narrow matrices need it to put enough
// loads in flight (split_k_for in gemv_common.cuh).
template <int kM, int kSplit, typename OutT>
__global__ void __launch_bounds__(kThreads) gemv_fp8_kernel(GemvFp8Params p) {
  wait_for_prior_grids();
  constexpr int kWarps = kThreads / kWarpSize, kColsPerBlock = kWarps / kSplit;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int part = warp % kSplit;
  const int n = blockIdx.x * kColsPerBlock + warp / kSplit;
  const bool valid = n < p.N;  // no early return: the split reduction below synchronises
  const int n_chunks = p.K / kChunkBytes, n_kblocks = p.K / kFP8BlockSize;
  const uint8_t* w_row = p.w + int64_t(valid ? n : 0) * p.K;
  const uint8_t* ws_row = p.w_scale + int64_t((valid ? n : 0) / kFP8BlockSize) * n_kblocks;

  float acc[kM];
#pragma unroll
  for (int m = 0; m < kM; ++m) acc[m] = 0.0f;

  constexpr int kStride = kWarpSize * kSplit;
  for (int c0 = part * kWarpSize + lane; valid && c0 < n_chunks; c0 += kStride * kUnroll) {
    uint4 wv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kStride;
      if (c < n_chunks) wv[u] = load_stream(w_row + int64_t(c) * kChunkBytes);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kStride;
      if (c >= n_chunks) break;
      const int kb = c / kChunksPerBlock;
      const float sw = e8m0_to_float(ws_row[kb]);
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        if (m >= p.M) break;
        const uint4 xv = __ldg(reinterpret_cast<const uint4*>(p.x + int64_t(m) * p.K) + c);
        const float sx = e8m0_to_float(p.x_scale[int64_t(m) * n_kblocks + kb]);
        acc[m] = fmaf(dot16_e4m3(wv[u], xv), sw * sx, acc[m]);
      }
    }
  }
  split_k_reduce<kWarps, kM, kSplit>(acc, warp, lane, part);
  if (!valid || part != 0 || lane != 0) return;
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    if (m >= p.M) break;
    OutT* y = static_cast<OutT*>(p.y) + int64_t(m) * p.N + n;
    if constexpr (sizeof(OutT) == 2) *y = __float2bfloat16_rn(acc[m]); else *y = acc[m];
  }
}

template <int kM, int kSplit>
void launch_ms(const GemvFp8Params& p, cudaStream_t stream) {
  constexpr int kColsPerBlock = kThreads / kWarpSize / kSplit;
  const int grid = (p.N + kColsPerBlock - 1) / kColsPerBlock;
  if (p.out_bf16)
    launch_kernel(gemv_fp8_kernel<kM, kSplit, __nv_bfloat16>, grid, kThreads, 0, stream, p);
  else
    launch_kernel(gemv_fp8_kernel<kM, kSplit, float>, grid, kThreads, 0, stream, p);
}

template <int kM>
void launch_m(const GemvFp8Params& p, cudaStream_t stream) {
  switch (split_k_for(p.N, p.K / kChunkBytes, kThreads / kWarpSize)) {
    case 1: return launch_ms<kM, 1>(p, stream);
    case 2: return launch_ms<kM, 2>(p, stream);
    case 4: return launch_ms<kM, 4>(p, stream);
    default: return launch_ms<kM, 8>(p, stream);
  }
}

}  // namespace

void launch_gemv_fp8(const GemvFp8Params& p, cudaStream_t stream) {
  DSV4_CHECK(p.w && p.w_scale && p.x && p.x_scale && p.y);
  DSV4_CHECK_MSG(p.M >= 1 && p.M <= kGemvMaxBatch, "M=", p.M);
  DSV4_CHECK_MSG(p.N >= 1 && p.K >= kFP8BlockSize && p.K % kFP8BlockSize == 0, "N=", p.N, " K=", p.K);
  DSV4_CHECK(reinterpret_cast<uintptr_t>(p.w) % 16 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0);
  // Round M up to a compiled batch width; rows >= p.M are skipped inside.
  if (p.M == 1) launch_m<1>(p, stream);
  else if (p.M == 2) launch_m<2>(p, stream);
  else if (p.M <= 4) launch_m<4>(p, stream);
  else launch_m<8>(p, stream);
}

}  // namespace dsv4::cuda
