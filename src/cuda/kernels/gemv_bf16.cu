// BF16 GEMV kernel and launcher; see gemv_bf16.cuh for the contract.
// One warp (or kSplit warps) per output column, 16-byte (8 × BF16) coalesced weight loads that
// bypass L1. Dense: one block row serves all M ≤ 8 rows of x. Experts: grid row m is one GEMV
// against expert expert_idx[m].
#include "cuda/kernels/gemv_bf16.cuh"

#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/gemv_common.cuh"
#include "cuda/kernels/gemv_fp8.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunkElems = 8;  // 16 bytes of BF16
constexpr int kUnroll = 4;

// kSplit warps share one output column (split_k_reduce / split_k_for, gemv_common.cuh).
// kExperts: kM == 1 and y row m = blockIdx.y uses expert expert_idx[m].
template <int kM, int kSplit, typename OutT, bool kExperts>
__global__ void __launch_bounds__(kThreads) gemv_bf16_kernel(GemvBf16Params p) {
  wait_for_prior_grids();
  static_assert(!kExperts || kM == 1, "expert mode: one y row per grid row");
  constexpr int kWarps = kThreads / kWarpSize, kColsPerBlock = kWarps / kSplit;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int part = warp % kSplit;
  const int n = blockIdx.x * kColsPerBlock + warp / kSplit;
  const int m0 = kExperts ? int(blockIdx.y) : 0;
  const int e = kExperts ? p.expert_idx[m0] : 0;
  const bool masked = e < 0, bad = kExperts && e >= p.n_experts;
  // No early return: the split reduction below synchronises.
  const bool valid = n < p.N && !masked && !bad;
  const int n_chunks = p.K / kChunkElems;
  const __nv_bfloat16* w_row = p.w + (int64_t(valid ? e : 0) * p.N + (valid ? n : 0)) * p.K;
  // Dense: x row m. Experts (kM == 1): x row m0 / sel_per_x.
  const __nv_bfloat16* x = p.x + (kExperts ? int64_t(m0 / p.sel_per_x) * p.K : 0);
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
        const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x + int64_t(m) * p.K) + c);
        acc[m] += dot8_bf16(wv[u], xv);
      }
    }
  }
  split_k_reduce<kWarps, kM, kSplit>(acc, warp, lane, part);
  if (n >= p.N || part != 0 || lane != 0) return;
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    if (m0 + m >= p.M) break;
    const float v = masked ? 0.0f : bad ? __int_as_float(0x7fc00000) : acc[m];
    OutT* y = static_cast<OutT*>(p.y) + int64_t(m0 + m) * p.N + n;
    if constexpr (sizeof(OutT) == 2) *y = __float2bfloat16_rn(v); else *y = v;
  }
}

template <int kM, int kSplit, bool kExperts>
void launch_ms(const GemvBf16Params& p, cudaStream_t stream) {
  constexpr int kColsPerBlock = kThreads / kWarpSize / kSplit;
  const dim3 grid((p.N + kColsPerBlock - 1) / kColsPerBlock, kExperts ? p.M : 1);
  if (p.out_bf16)
    launch_kernel(gemv_bf16_kernel<kM, kSplit, __nv_bfloat16, kExperts>, grid, kThreads, 0, stream, p);
  else
    launch_kernel(gemv_bf16_kernel<kM, kSplit, float, kExperts>, grid, kThreads, 0, stream, p);
}

template <int kM, bool kExperts>
void launch_m(const GemvBf16Params& p, cudaStream_t stream) {
  // Expert mode runs M independent GEMVs at once: count all of their columns (anything at or
  // above the target means no split).
  const int64_t cols = int64_t(p.N) * (kExperts ? p.M : 1);
  switch (split_k_for(int(std::min<int64_t>(cols, kSplitTargetWarps)), p.K / kChunkElems, kThreads / kWarpSize)) {
    case 1: return launch_ms<kM, 1, kExperts>(p, stream);
    case 2: return launch_ms<kM, 2, kExperts>(p, stream);
    case 4: return launch_ms<kM, 4, kExperts>(p, stream);
    default: return launch_ms<kM, 8, kExperts>(p, stream);
  }
}

}  // namespace

void launch_gemv_bf16(const GemvBf16Params& p, cudaStream_t stream) {
  DSV4_CHECK(p.w && p.x && p.y);
  DSV4_CHECK_MSG(p.N >= 1 && p.K >= kChunkElems && p.K % kChunkElems == 0, "N=", p.N, " K=", p.K);
  DSV4_CHECK(reinterpret_cast<uintptr_t>(p.w) % 16 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0);
  if (p.expert_idx) {
    DSV4_CHECK_MSG(p.M >= 1 && p.M <= kMaxGridY && p.n_experts >= 1, "M=", p.M, " n_experts=", p.n_experts);
    DSV4_CHECK_MSG(p.sel_per_x >= 1, "sel_per_x=", p.sel_per_x);
    return launch_m<1, true>(p, stream);
  }
  DSV4_CHECK_MSG(p.M >= 1 && p.M <= kGemvMaxBatch, "M=", p.M);
  DSV4_CHECK_MSG(p.sel_per_x == 1, "sel_per_x=", p.sel_per_x, " needs expert_idx");
  if (p.M == 1) launch_m<1, false>(p, stream);
  else if (p.M == 2) launch_m<2, false>(p, stream);
  else if (p.M <= 4) launch_m<4, false>(p, stream);
  else launch_m<8, false>(p, stream);
}

}  // namespace dsv4::cuda
