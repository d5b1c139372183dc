// MoE combine kernel and launcher; see moe_combine.cuh for the contract and the summation order.
// grid.y = row (in chunks of 65535), grid.x = column tiles; each thread sums 2 adjacent columns.
#include "cuda/kernels/moe_combine.cuh"

#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) moe_combine_kernel(MoeCombineParams p, int t0) {
  wait_for_prior_grids();
  const int t = t0 + blockIdx.y;
  const bool real = !p.n_real || t < *p.n_real;
  // Routed row of each pick, in the order of the sum: ascending expert id when ids are given
  // (the reference's expert loop).
  __shared__ int64_t row_of[kMaxCombineK];
  if (threadIdx.x < p.k) {
    const int i = threadIdx.x;
    int rank = i;
    if (p.expert_ids) {
      const int32_t* ids = p.expert_ids + int64_t(t) * p.k;
      const int32_t e = ids[i];
      rank = 0;
      for (int j = 0; j < p.k; ++j) rank += ids[j] < e || (ids[j] == e && j < i);
    }
    const int64_t slot = int64_t(t) * p.k + i;
    row_of[rank] = p.routed_row ? p.routed_row[slot] : slot;
  }
  __syncthreads();
  const int c = 2 * (blockIdx.x * kThreads + threadIdx.x);
  if (c >= p.D) return;
  const bool pair = c + 1 < p.D;
  float y0 = 0.0f, y1 = 0.0f;  // the reference's torch.zeros(..., float32) accumulator
  if (real) {
    for (int j = 0; j < p.k; ++j) {
      if (row_of[j] < 0) {  // a pick without an expert: make the row visibly wrong
        y0 = y1 = __int_as_float(0x7fc00000);
        continue;
      }
      const __nv_bfloat16* r = p.routed + row_of[j] * p.D + c;
      y0 += __bfloat162float(r[0]);
      if (pair) y1 += __bfloat162float(r[1]);
    }
  }
  const __nv_bfloat16* s = p.shared + int64_t(t) * p.D + c;
  __nv_bfloat16* o = p.out + int64_t(t) * p.D + c;
  o[0] = __float2bfloat16_rn(y0 + __bfloat162float(s[0]));
  if (pair) o[1] = __float2bfloat16_rn(y1 + __bfloat162float(s[1]));
}

}  // namespace

void launch_moe_combine(const MoeCombineParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.T >= 0);
  if (p.T == 0) return;  // an empty batch has no buffers to check (a 0-element allocation is null)
  DSV4_CHECK(p.routed && p.shared && p.out && p.D >= 1);
  DSV4_CHECK_MSG(p.k >= 1 && p.k <= kMaxCombineK, "moe_combine: k=", p.k, " outside [1, ", kMaxCombineK, "]");
  const int tiles = (p.D + 2 * kThreads - 1) / (2 * kThreads);
  for (int t0 = 0; t0 < p.T; t0 += kMaxGridY) {
    const dim3 grid(tiles, std::min(kMaxGridY, p.T - t0));
    launch_kernel(moe_combine_kernel, grid, kThreads, 0, stream, p, t0);
  }
}

}  // namespace dsv4::cuda
