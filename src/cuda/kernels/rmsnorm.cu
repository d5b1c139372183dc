// RMSNorm (+ FP8 1×128 quantisation) kernel and its launcher; see rmsnorm.cuh for the contract.
// One block per row: pass 1 reduces Σx², pass 2 writes y (and q) one 128-wide chunk per warp.
#include "cuda/kernels/rmsnorm.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;  // 8 warps: a 4096-wide row is 32 chunks, 4 per warp
constexpr int kChunk = 4 * kWarpSize;  // 128 elements per warp step = one activation block

template <bool kQuant>
__global__ void __launch_bounds__(kThreads) rmsnorm_kernel(RmsNormParams p) {
  const int row = blockIdx.x;
  const __nv_bfloat16* x = p.x + int64_t(row) * p.dim;
  __nv_bfloat16* y = p.y + int64_t(row) * p.dim;

  float ss = 0.0f;
  for (int i = threadIdx.x; i < p.dim; i += kThreads) {
    const float v = __bfloat162float(x[i]);
    ss = fmaf(v, v, ss);
  }
  __shared__ float warp_ss[kThreads / kWarpSize];
  ss = warp_sum(ss);
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  if (lane == 0) warp_ss[warp] = ss;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < kThreads / kWarpSize; ++w) total += warp_ss[w];
  const float r = rsqrtf(total / float(p.dim) + p.eps);

  const int n_chunks = (p.dim + kChunk - 1) / kChunk;
  for (int c = warp; c < n_chunks; c += kThreads / kWarpSize) {
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int i = c * kChunk + 4 * lane + j;
      v[j] = 0.0f;
      if (i < p.dim) {
        float t = __bfloat162float(x[i]) * r;
        if (p.weight) t *= __bfloat162float(p.weight[i]);
        const __nv_bfloat16 b = __float2bfloat16_rn(t);
        y[i] = b;
        v[j] = __bfloat162float(b);  // §12: the quantiser sees the BF16 activation
      }
    }
    if constexpr (kQuant)
      warp_quantize_block128(v, p.q + int64_t(row) * p.dim + c * kChunk,
                             p.q_scale + int64_t(row) * (p.dim / kChunk) + c);
  }
}

}  // namespace

void launch_rmsnorm(const RmsNormParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.x && p.y && p.n_rows >= 0 && p.dim >= 1);
  DSV4_CHECK_MSG(!p.q || (p.q_scale && p.dim % kChunk == 0), "FP8 quantisation needs dim % 128 == 0, dim=", p.dim);
  if (p.n_rows == 0) return;
  if (p.q)
    rmsnorm_kernel<true><<<p.n_rows, kThreads, 0, stream>>>(p);
  else
    rmsnorm_kernel<false><<<p.n_rows, kThreads, 0, stream>>>(p);
  DSV4_CUDA_CHECK_LAUNCH();
}

}  // namespace dsv4::cuda
