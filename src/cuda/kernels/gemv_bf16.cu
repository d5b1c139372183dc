// BF16 GEMV kernel and launcher; see gemv_bf16.cuh for the contract.
// One warp per output column, 16-byte (8 × BF16) coalesced weight loads that bypass L1.
#include "cuda/kernels/gemv_bf16.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/gemv_fp8.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarpSize;
constexpr int kChunkElems = 8;  // 16 bytes of BF16
constexpr int kUnroll = 4;

__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

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

template <int kM>
__global__ void __launch_bounds__(kThreads) gemv_bf16_kernel(GemvBf16Params p) {
  const int lane = threadIdx.x % kWarpSize;
  const int n = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (n >= p.N) return;
  const int n_chunks = p.K / kChunkElems;
  const __nv_bfloat16* w_row = p.w + int64_t(n) * p.K;
  float acc[kM];
#pragma unroll
  for (int m = 0; m < kM; ++m) acc[m] = 0.0f;
  for (int c0 = lane; c0 < n_chunks; c0 += kWarpSize * kUnroll) {
    uint4 wv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kWarpSize;
      if (c < n_chunks) wv[u] = load_stream(w_row + int64_t(c) * kChunkElems);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kWarpSize;
      if (c >= n_chunks) break;
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        if (m >= p.M) break;
        const uint4 xv = __ldg(reinterpret_cast<const uint4*>(p.x + int64_t(m) * p.K) + c);
        acc[m] += dot8_bf16(wv[u], xv);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    if (m >= p.M) break;
    const float s = warp_sum(acc[m]);
    if (lane == 0) p.y[int64_t(m) * p.N + n] = s;
  }
}

template <int kM>
void launch_m(const GemvBf16Params& p, cudaStream_t stream) {
  gemv_bf16_kernel<kM><<<(p.N + kRowsPerBlock - 1) / kRowsPerBlock, kThreads, 0, stream>>>(p);
  DSV4_CUDA_CHECK_LAUNCH();
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
