// Hadamard + FP4 kernel and launcher; see hadamard_fp4.cuh for the contract.
// One warp per 128-d row, lane l holding elements 4l..4l+3: butterflies of stride 1 and 2 stay
// in registers, strides 4..64 pair lanes l and l ^ (stride/4) through shuffles. A 32-block is
// 8 lanes, so its amax is three shuffle steps. With pos, the lanes of the rope slice rotate
// their two pairs first.
#include "cuda/kernels/hadamard_fp4.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 128;  // 4 rows per block
constexpr float kHadamardScale = 0.08838834764831845f;  // 1/sqrt(128)
constexpr int kLanesPerFp4Block = kMXFP4BlockSize / 4;  // 8
static_assert(kIndexerDim == 4 * kWarpSize, "one warp per row, 4 values per lane");
// §12: FP4 scales use max(amax, 6·2^-126), so amax/6 never falls below the smallest normal.
constexpr float kFp4AmaxFloorDev = kE2M1Max * 1.1754943508222875e-38f;

// Nearest E2M1 code, ties to the even code, saturating at ±6 (util/float_formats.cpp's rule).
__device__ __forceinline__ uint32_t float_to_e2m1(float f) {
  const uint32_t sign = signbit(f) ? 0x8u : 0x0u;
  const float a = fabsf(f);
  uint32_t c;
  if (a <= 0.25f) c = 0;
  else if (a < 0.75f) c = 1;
  else if (a <= 1.25f) c = 2;
  else if (a < 1.75f) c = 3;
  else if (a <= 2.5f) c = 4;
  else if (a < 3.5f) c = 5;
  else if (a <= 5.0f) c = 6;
  else c = 7;  // > 5 and NaN
  return sign | c;
}
__device__ __forceinline__ float e2m1_value(uint32_t code) {
  const float mag = (code & 7) < 4 ? 0.5f * float(code & 7) : float(1 << ((code & 7) / 2 - 1)) * (1.0f + 0.5f * float(code & 1));
  return (code & 8) ? -mag : mag;
}

__global__ void __launch_bounds__(kThreads) hadamard_fp4_kernel(HadamardFp4Params p) {
  wait_for_prior_grids();
  const int row = blockIdx.x * (kThreads / kWarpSize) + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= p.n_rows) return;
  const int64_t base = int64_t(row) * kIndexerDim + 4 * lane;
  float v[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j] = __bfloat162float(p.x[base + j]);
  if (p.pos && 4 * lane >= kIndexerDim - p.rope_dim) {  // the lane's two pairs, as rope.cu rounds them
    const float t = float(p.pos[row / p.rows_per_pos]);
    const int i0 = (4 * lane - (kIndexerDim - p.rope_dim)) / 2;
#pragma unroll
    for (int j = 0; j < 4; j += 2) {
      rope_pair(v[j], v[j + 1], t * p.inv_freq[i0 + j / 2], false);
      v[j] = __bfloat162float(__float2bfloat16_rn(v[j]));
      v[j + 1] = __bfloat162float(__float2bfloat16_rn(v[j + 1]));
    }
  }
  // Sylvester order: stage h combines (i, i+h) for i & h == 0 into (a+b, a−b).
  float t0 = v[0] + v[1], t1 = v[0] - v[1], t2 = v[2] + v[3], t3 = v[2] - v[3];
  v[0] = t0 + t2; v[2] = t0 - t2; v[1] = t1 + t3; v[3] = t1 - t3;
#pragma unroll
  for (int m = 1; m < kWarpSize; m *= 2) {
    const bool upper = lane & m;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float o = __shfl_xor_sync(kFullMask, v[j], m);
      v[j] = upper ? o - v[j] : v[j] + o;
    }
  }
  float y[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const __nv_bfloat16 b = __float2bfloat16_rn(v[j] * kHadamardScale);
    y[j] = __bfloat162float(b);
    if (p.y) p.y[base + j] = b;
  }
  float amax = fmaxf(fmaxf(fabsf(y[0]), fabsf(y[1])), fmaxf(fabsf(y[2]), fabsf(y[3])));
#pragma unroll
  for (int m = 1; m < kLanesPerFp4Block; m *= 2) amax = fmaxf(amax, __shfl_xor_sync(kFullMask, amax, m));
  // UE8M0 byte = FP32 exponent field of max(amax, floor)/6, rounded up when not a power of two.
  const uint32_t bits = __float_as_uint(fmaxf(amax, kFp4AmaxFloorDev) / kE2M1Max);
  const uint32_t sb = ((bits >> 23) & 0xffu) + ((bits & 0x7fffffu) ? 1u : 0u);
  const float s = __uint_as_float(sb << 23), inv = __uint_as_float((254u - sb) << 23);
  uint32_t codes = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t c = float_to_e2m1(y[j] * inv);
    codes |= c << (4 * j);
    if (p.fq) p.fq[base + j] = __float2bfloat16_rn(e2m1_value(c) * s);
  }
  const int64_t dst = p.row_dst ? int64_t(p.row_dst[row]) : int64_t(row);
  if (p.packed && dst >= 0) {
    reinterpret_cast<uint16_t*>(p.packed + dst * (kIndexerDim / 2))[lane] = uint16_t(codes);
    if (lane % kLanesPerFp4Block == 0) p.scale[dst * (kIndexerDim / kMXFP4BlockSize) + lane / kLanesPerFp4Block] = uint8_t(sb);
  }
}

}  // namespace

void launch_hadamard_fp4(const HadamardFp4Params& p, cudaStream_t stream) {
  DSV4_CHECK(p.x && p.n_rows >= 0 && (!p.packed || p.scale) && (!p.row_dst || p.packed));
  DSV4_CHECK_MSG(!p.pos || (p.inv_freq && p.rope_dim > 0 && p.rope_dim % 4 == 0 && p.rope_dim <= kIndexerDim &&
                            p.rows_per_pos >= 1 && p.n_rows % p.rows_per_pos == 0),
                 "hadamard_fp4 with RoPE: rope_dim=", p.rope_dim, " rows=", p.n_rows, " rows_per_pos=", p.rows_per_pos);
  if (p.n_rows == 0) return;
  const int per_block = kThreads / kWarpSize;
  launch_kernel(hadamard_fp4_kernel, (p.n_rows + per_block - 1) / per_block, kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
