// FP8 1×128 activation quantisation kernel and launcher; see act_quant.cuh for the contract.
// One warp per 128-column block, 4 consecutive elements per lane (8-byte loads and stores).
#include "cuda/kernels/act_quant.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarpSize;
constexpr int kBlock = 4 * kWarpSize;  // one quantisation block per warp
static_assert(kBlock == kActBlockSize);

__global__ void __launch_bounds__(kThreads) act_quant_kernel(ActQuantParams p, int64_t n_blocks) {
  wait_for_prior_grids();
  const int64_t b = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (b >= n_blocks) return;  // whole warp
  const int lane = threadIdx.x % kWarpSize;
  const int64_t off = b * kBlock + 4 * lane;  // blocks tile each row (K % 128 == 0), so b·128 is flat
  const uint2 raw = *reinterpret_cast<const uint2*>(p.x + off);
  const __nv_bfloat162 lo = *reinterpret_cast<const __nv_bfloat162*>(&raw.x);
  const __nv_bfloat162 hi = *reinterpret_cast<const __nv_bfloat162*>(&raw.y);
  const float v[4] = {__low2float(lo), __high2float(lo), __low2float(hi), __high2float(hi)};

  float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
  amax = warp_max(amax);
  const uint8_t sb = act_scale_byte(amax);
  const float inv = inv_e8m0(sb), s = e8m0_to_float(sb);
  uint32_t packed = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) packed |= uint32_t(float_to_e4m3(v[j] * inv)) << (8 * j);
  if (p.q) {
    *reinterpret_cast<uint32_t*>(p.q + off) = packed;
    if (lane == 0) p.q_scale[b] = sb;
  }
  if (p.fake) {
    const float2 q01 = e4m3x2_to_float2(uint16_t(packed & 0xffffu));
    const float2 q23 = e4m3x2_to_float2(uint16_t(packed >> 16));
    uint2 out;
    *reinterpret_cast<__nv_bfloat162*>(&out.x) = __floats2bfloat162_rn(q01.x * s, q01.y * s);
    *reinterpret_cast<__nv_bfloat162*>(&out.y) = __floats2bfloat162_rn(q23.x * s, q23.y * s);
    *reinterpret_cast<uint2*>(p.fake + off) = out;
  }
}

}  // namespace

void launch_act_quant(const ActQuantParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.rows >= 0 && p.K >= 0);
  if (p.rows == 0) return;  // an empty batch has no buffers to check (a 0-element allocation is null)
  DSV4_CHECK(p.x && (p.q || p.fake));
  DSV4_CHECK_MSG(p.K % kBlock == 0, "FP8 1x128 activation quantisation needs K % 128 == 0, K=", p.K);
  DSV4_CHECK_MSG(!p.q || p.q_scale, "act_quant: q without q_scale");
  // 8-byte vector accesses: every row starts on a 256-byte boundary of the base (K % 128 == 0).
  DSV4_CHECK((reinterpret_cast<uintptr_t>(p.x) | reinterpret_cast<uintptr_t>(p.fake)) % 8 == 0);
  DSV4_CHECK(reinterpret_cast<uintptr_t>(p.q) % 4 == 0);
  const int64_t n_blocks = int64_t(p.rows) * (p.K / kBlock);
  if (n_blocks == 0) return;
  const int64_t grid = (n_blocks + kWarpsPerBlock - 1) / kWarpsPerBlock;
  DSV4_CHECK_MSG(grid <= INT32_MAX, "act_quant: ", p.rows, " x ", p.K, " is too large for one launch");
  launch_kernel(act_quant_kernel, unsigned(grid), kThreads, 0, stream, p, n_blocks);
}

}  // namespace dsv4::cuda
