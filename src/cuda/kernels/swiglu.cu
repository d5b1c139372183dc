// Clamped SwiGLU kernel and launcher; see swiglu.cuh for the contract.
// One warp per 128-wide chunk of a row (= one activation quantisation block); grid.y strides
// over the rows.
#include "cuda/kernels/swiglu.cuh"

#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 4 * kWarpSize;

template <bool kQuant>
__global__ void __launch_bounds__(kThreads) swiglu_kernel(SwigluParams p) {
  wait_for_prior_grids();
  const int chunk = blockIdx.x * (kThreads / kWarpSize) + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (chunk * kChunk >= p.I) return;  // whole warp
  const int n_rows = p.n_rows_active ? min(*p.n_rows_active, p.n_rows) : p.n_rows;
  for (int row = blockIdx.y; row < n_rows; row += gridDim.y) {
    const float wr = p.row_weight ? p.row_weight[row] : 1.0f;
    const int64_t off = int64_t(row) * p.I;
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int i = chunk * kChunk + 4 * lane + j;
      v[j] = 0.0f;
      if (i < p.I) {
        const float g = fminf(__bfloat162float(p.gate[off + i]), p.limit);
        const float u = fminf(fmaxf(__bfloat162float(p.up[off + i]), -p.limit), p.limit);
        float h = g / (1.0f + expf(-g)) * u;  // silu(g)·u
        if (p.row_weight) h = wr * h;         // §8.2: weight before w2
        const __nv_bfloat16 b = __float2bfloat16_rn(h);
        p.h[off + i] = b;
        v[j] = __bfloat162float(b);
      }
    }
    if constexpr (kQuant) {
      uint8_t* q = p.q + off + chunk * kChunk;
      uint8_t* scale = p.q_scale + int64_t(row) * (p.I / kChunk) + chunk;
      warp_quantize_block128(v, q, scale);
      if (p.fake) {  // read back this lane's 4 bytes and, once lane 0 wrote it, the block scale
        __syncwarp();
        const float s = e8m0_to_float(*scale);
        const uint32_t packed = *reinterpret_cast<const uint32_t*>(q + 4 * lane);
        const float2 a = e4m3x2_to_float2(uint16_t(packed)), b = e4m3x2_to_float2(uint16_t(packed >> 16));
        __nv_bfloat16* f = p.fake + off + chunk * kChunk + 4 * lane;
        f[0] = __float2bfloat16_rn(a.x * s);  // exact: an E4M3 value times a power of two
        f[1] = __float2bfloat16_rn(a.y * s);
        f[2] = __float2bfloat16_rn(b.x * s);
        f[3] = __float2bfloat16_rn(b.y * s);
      }
    }
  }
}

}  // namespace

void launch_swiglu(const SwigluParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.n_rows >= 0);
  if (p.n_rows == 0) return;
  DSV4_CHECK(p.gate && p.up && p.h && p.I >= 1);
  DSV4_CHECK_MSG(!p.q || (p.q_scale && p.I % kChunk == 0), "FP8 quantisation needs I % 128 == 0, I=", p.I);
  DSV4_CHECK_MSG(!p.fake || p.q, "swiglu: the BF16 fake-quant output needs the FP8 quantisation");
  const int n_chunks = (p.I + kChunk - 1) / kChunk;
  const dim3 grid((n_chunks + kThreads / kWarpSize - 1) / (kThreads / kWarpSize), std::min(p.n_rows, kMaxGridY));
  if (p.q)
    launch_kernel(swiglu_kernel<true>, grid, kThreads, 0, stream, p);
  else
    launch_kernel(swiglu_kernel<false>, grid, kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
