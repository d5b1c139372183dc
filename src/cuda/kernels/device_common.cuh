// Device-side helpers shared by the kernel families: warp reductions, the BF16 MMA and its
// shared-memory fragment loads, UE8M0/E4M3/E2M1 element conversions and the FP8 1×128 activation
// quantiser (§12). Included by kernels/*.cu only; the host-side scalar ground truth for the same
// formats is util/float_formats.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "model/quant.h"
#include "util/float_formats.h"

namespace dsv4::cuda {

constexpr int kWarpSize = 32;
constexpr int kMaxGridY = 65535;  // CUDA's limit on gridDim.y (launchers that put rows on y check it)
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// D += A·B, m16n8k16, BF16 × BF16 → FP32 (PTX ISA "mma.m16n8k16" fragment layout; sm_80+).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Round two floats to BF16 (nearest even) and pack them, lo in the low half: an MMA operand word.
__device__ __forceinline__ uint32_t bf16x2_bits(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Eight BF16 (one 16-byte access, the even element in each word's low half) → floats: a shift
// each, exact.
__device__ __forceinline__ void bf16x8_to_floats(const uint4& raw, float (&f)[8]) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
// Eight floats → eight BF16 (nearest even), packed as bf16x8_to_floats reads them.
__device__ __forceinline__ uint4 floats_to_bf16x8(const float (&f)[8]) {
  return make_uint4(bf16x2_bits(f[0], f[1]), bf16x2_bits(f[2], f[3]), bf16x2_bits(f[4], f[5]), bf16x2_bits(f[6], f[7]));
}

__device__ __forceinline__ uint32_t smem_addr(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}
// Four 8×8 BF16 matrices from shared memory; lanes 8i … 8i+7 give the row addresses of matrix i
// (PTX "ldmatrix"). With row = lane % 16 and column offset 8·(lane / 16) over a row-major 16×16
// tile, the registers are mma_bf16's A fragment.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
}
// The same, each matrix transposed: a lane receives a column pair instead of a row pair.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
}

// §4.4 RoPE of one interleaved pair (x0, x1) at `angle` = position · inv_freq, in FP32: the
// rotation, or with `inverse` its conjugate (sin negated). rope.cu and the kernels that fuse RoPE
// (rmsnorm.cu, hadamard_fp4.cu) share it and must round alike, so the FMAs are written out
// (_rn intrinsics): left to itself, the compiler contracts `a·c − b·s` into an FMA differently
// from one inlined copy to the next (an in-place launch of the fused norm differed from rope.cu
// in a BF16 bit, 2026-12-06). Each output keeps one FMA, as the compiler's own contraction did:
// with both products rounded (one rounding more), nano_fp8_prefill's CPU-parity test counted 15
// top-1 flips, over its budget of 13 (H100, 2026-12-06).
__device__ __forceinline__ void rope_pair(float& x0, float& x1, float angle, bool inverse) {
  float s, c;
  sincosf(angle, &s, &c);  // full-range reduction (no fast-math): positions reach 2^20
  if (inverse) s = -s;
  const float a = x0, b = x1;
  x0 = __fmaf_rn(a, c, -__fmul_rn(b, s));
  x1 = __fmaf_rn(a, s, __fmul_rn(b, c));
}

// §4.4 inverse RoPE of one output pair (x0, x1) at `angle` = position · inv_freq: the conjugate
// rotation (sin negated), in FP32.
__device__ __forceinline__ void inverse_rope_pair(float& x0, float& x1, float angle) {
  float sn, cs;
  sincosf(angle, &sn, &cs);
  const float a = x0, b = x1;
  x0 = a * cs + b * sn;
  x1 = b * cs - a * sn;
}

// UE8M0 byte -> 2^(b-127) (§11.2). The biased exponent is the FP32 exponent field, so normal
// values are one shift; b = 0 is the FP32 subnormal 2^-127 and 0xFF is NaN.
__device__ __forceinline__ float e8m0_to_float(uint8_t b) {
  if (b == kE8M0Nan) return __int_as_float(0x7fc00000);
  if (b == 0) return 5.877471754111438e-39f;  // 2^-127
  return __int_as_float(int(b) << 23);
}
// The same value as selects instead of branches, for inner loops: there ptxas turns the form
// above into a reconvergence block per call (BSSY/BSYNC; 8 per K group of the grouped FP4
// GEMM), and a branch on a just-loaded byte stalls the loads queued behind it.
__device__ __forceinline__ float e8m0_to_float_select(uint32_t b) {
  const float normal = __uint_as_float(b << 23);
  return b == kE8M0Nan ? __uint_as_float(0x7fc00000u) : b == 0 ? 5.877471754111438e-39f : normal;
}

// Two E4M3 bytes (low byte = first element) -> two floats, via the hardware E4M3x2 -> F16x2
// conversion (every E4M3 value is exact in F16).
__device__ __forceinline__ float2 e4m3x2_to_float2(uint16_t pair) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(pair), __NV_E4M3);
  return __half22float2(__half2(h));
}

// E2M1 nibbles as F16 bit patterns: sign -> bit 15, the 3 exponent/mantissa bits -> bits 9..11.
// The F16 read that way is exactly value·2^-14 for every code (normal and the 0.5 subnormal), so
// callers multiply the 2^14 back into the block scale (kE2M1AsHalfScale) instead of per element.
constexpr float kE2M1AsHalfScale = 16384.0f;  // 2^14 = 2^(F16 bias 15 − E2M1 bias 1)
// One byte = two E2M1 elements (low nibble = even element, §11.3) -> float2 (·2^-14).
__device__ __forceinline__ float2 e2m1x2_to_float2_scaled(uint32_t b) {
  const uint32_t h2 = ((b & 0x8u) << 12) | ((b & 0x7u) << 9) | ((b & 0x80u) << 24) | ((b & 0x70u) << 21);
  return __half22float2(*reinterpret_cast<const __half2*>(&h2));
}

// UE8M0 scale byte for a block with absolute maximum amax: 2^ceil(log2(max(amax,1e-4)/448)) (§12).
// The FP32 exponent field of r = max(amax,floor)/448 is the UE8M0 byte of 2^floor(log2 r); a
// non-zero mantissa rounds it up. r is always normal here (floor 1e-4/448 > 2^-126).
__device__ __forceinline__ uint8_t act_scale_byte(float amax) {
  const float r = fmaxf(amax, kActAmaxFloor) / kE4M3Max;
  const uint32_t bits = __float_as_uint(r);
  uint32_t e = (bits >> 23) & 0xffu;
  if (bits & 0x7fffffu) ++e;
  return uint8_t(e);
}
// 1 / 2^(b-127) as an exact power of two (b in the range act_scale_byte produces).
__device__ __forceinline__ float inv_e8m0(uint8_t b) { return __int_as_float((254 - int(b)) << 23); }

__device__ __forceinline__ uint8_t float_to_e4m3(float v) {
  // Round to nearest even, saturating to ±448: the reference clamps to ±448 before its cast.
  return uint8_t(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

// FP8 1×128 activation quantisation of one block held by one warp, 4 consecutive values per lane
// (lane l holds elements 4l..4l+3). Writes q[4l..4l+3] and, from lane 0, the scale byte.
__device__ __forceinline__ void warp_quantize_block128(const float (&v)[4], uint8_t* q,  // [128] e4m3
                                                       uint8_t* scale) {                // [1] ue8m0
  static_assert(kActBlockSize == 4 * kWarpSize, "one warp = one 1x128 activation block");
  float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
  amax = warp_max(amax);
  const uint8_t sb = act_scale_byte(amax);
  const float inv = inv_e8m0(sb);
  const int lane = threadIdx.x % kWarpSize;
  uint32_t packed = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) packed |= uint32_t(float_to_e4m3(v[j] * inv)) << (8 * j);
  *reinterpret_cast<uint32_t*>(q + 4 * lane) = packed;
  if (lane == 0) *scale = sb;
}

}  // namespace dsv4::cuda
