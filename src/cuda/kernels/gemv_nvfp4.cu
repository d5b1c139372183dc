// Dense NVFP4 GEMV kernel and launcher; see gemv_nvfp4.cuh for the contract.
// One warp (or kSplit warps) per output column n, as gemv_fp8: lanes stream the weight row in
// 16-byte chunks (32 E2M1 values = two NVFP4 scale blocks), coalesced across the warp, bypassing
// L1; the x rows (FP8: 32 bytes per chunk, BF16: 64) are re-read by every warp and stay cached.
#include "cuda/kernels/gemv_nvfp4.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/gemv_common.cuh"
#include "cuda/kernels/gemv_fp8.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;                       // 8 warps per block
constexpr int kChunkBytes = 16;                     // one 16-byte weight load
constexpr int kChunkElems = 2 * kChunkBytes;        // = 32 E2M1 values
static_assert(kChunkElems == 2 * kNVFP4BlockSize, "one load covers exactly two NVFP4 scale blocks");
static_assert(kActBlockSize % kChunkElems == 0, "a chunk never straddles an FP8 activation block");
constexpr int kUnroll = 4;                          // independent weight loads in flight per lane

// Σ over one chunk's two 16-element halves of e2m1(w)·x, each half separately (they carry their
// own scale), E2M1 values read as F16 ·2^-14 (device_common.cuh). x: FP8 codes (32 bytes, two
// uint4) or BF16 (64 bytes, four uint4); element e of word i is 8i + e.
template <bool kFp8In>
__device__ __forceinline__ float2 chunk_dots(const uint4& wv, const uint4 (&xv)[kFp8In ? 2 : 4]) {
  const uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
  float d[2] = {0.0f, 0.0f};
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // weight word i = elements 8i .. 8i+7 (half i / 2)
    float2 x[4];                 // the same 8 elements of x, in pairs
    if constexpr (kFp8In) {
      const uint4& q = xv[i / 2];
      const uint32_t lo = (i % 2) ? q.z : q.x, hi = (i % 2) ? q.w : q.y;  // elements 8i..8i+3, +4..+7
      x[0] = e4m3x2_to_float2(uint16_t(lo));
      x[1] = e4m3x2_to_float2(uint16_t(lo >> 16));
      x[2] = e4m3x2_to_float2(uint16_t(hi));
      x[3] = e4m3x2_to_float2(uint16_t(hi >> 16));
    } else {
      const uint32_t b[4] = {xv[i].x, xv[i].y, xv[i].z, xv[i].w};  // BF16 pairs, low half even
#pragma unroll
      for (int j = 0; j < 4; ++j) x[j] = make_float2(__uint_as_float(b[j] << 16), __uint_as_float(b[j] & 0xffff0000u));
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 wf = e2m1x2_to_float2_scaled(words[i] >> (8 * j));
      d[i / 2] = fmaf(wf.x, x[j].x, d[i / 2]);
      d[i / 2] = fmaf(wf.y, x[j].y, d[i / 2]);
    }
  }
  return make_float2(d[0], d[1]);
}

template <int kM, int kSplit, typename OutT, bool kFp8In>
__global__ void __launch_bounds__(kThreads) gemv_nvfp4_kernel(GemvNvfp4Params p) {
  wait_for_prior_grids();
  constexpr int kWarps = kThreads / kWarpSize, kColsPerBlock = kWarps / kSplit;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int part = warp % kSplit;
  const int n = blockIdx.x * kColsPerBlock + warp / kSplit;
  const bool valid = n < p.N;  // no early return: the split reduction below synchronises
  const int n_chunks = p.K / kChunkElems;
  const uint8_t* w_row = p.w + int64_t(valid ? n : 0) * (p.K / 2);
  // Row n's scales: n_chunks pairs of E4M3 (low byte = first half of the chunk).
  const uint16_t* ws_row = reinterpret_cast<const uint16_t*>(p.w_scale) + int64_t(valid ? n : 0) * n_chunks;

  float acc[kM];
#pragma unroll
  for (int m = 0; m < kM; ++m) acc[m] = 0.0f;

  constexpr int kStride = kWarpSize * kSplit;
  for (int c0 = part * kWarpSize + lane; valid && c0 < n_chunks; c0 += kStride * kUnroll) {
    uint4 wv[kUnroll];
    uint16_t sb[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kStride;
      if (c < n_chunks) {
        wv[u] = load_stream(w_row + int64_t(c) * kChunkBytes);
        sb[u] = ws_row[c];
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kStride;
      if (c >= n_chunks) break;
      float2 sw = e4m3x2_to_float2(sb[u]);  // E4M3 · 2^14 is exact in FP32
      sw.x *= kE2M1AsHalfScale;
      sw.y *= kE2M1AsHalfScale;
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        if (m >= p.M) break;
        float2 d;
        float sx = 1.0f;
        if constexpr (kFp8In) {
          const uint4* xq = reinterpret_cast<const uint4*>(p.x_fp8 + int64_t(m) * p.K) + 2 * c;
          const uint4 xv[2] = {__ldg(xq), __ldg(xq + 1)};
          d = chunk_dots<true>(wv[u], xv);
          sx = e8m0_to_float(p.x_scale[int64_t(m) * (p.K / kActBlockSize) + c * kChunkElems / kActBlockSize]);
        } else {
          const uint4* xb = reinterpret_cast<const uint4*>(p.x_bf16 + int64_t(m) * p.K) + 4 * c;
          const uint4 xv[4] = {__ldg(xb), __ldg(xb + 1), __ldg(xb + 2), __ldg(xb + 3)};
          d = chunk_dots<false>(wv[u], xv);
        }
        acc[m] = fmaf(d.x, sw.x * sx, acc[m]);
        acc[m] = fmaf(d.y, sw.y * sx, acc[m]);
      }
    }
  }
  split_k_reduce<kWarps, kM, kSplit>(acc, warp, lane, part);
  if (!valid || part != 0 || lane != 0) return;
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    if (m >= p.M) break;
    // §11.6: the per-tensor weight_scale_2 multiplies the whole sum once (one FP32 rounding).
    const float v = acc[m] * p.global_scale;
    OutT* y = static_cast<OutT*>(p.y) + int64_t(m) * p.N + n;
    if constexpr (sizeof(OutT) == 2) *y = __float2bfloat16_rn(v); else *y = v;
  }
}

template <int kM, int kSplit, bool kFp8In>
void launch_ms(const GemvNvfp4Params& p, cudaStream_t stream) {
  constexpr int kColsPerBlock = kThreads / kWarpSize / kSplit;
  const int grid = (p.N + kColsPerBlock - 1) / kColsPerBlock;
  if (p.out_bf16)
    launch_kernel(gemv_nvfp4_kernel<kM, kSplit, __nv_bfloat16, kFp8In>, grid, kThreads, 0, stream, p);
  else
    launch_kernel(gemv_nvfp4_kernel<kM, kSplit, float, kFp8In>, grid, kThreads, 0, stream, p);
}

template <int kM, bool kFp8In>
void launch_m(const GemvNvfp4Params& p, cudaStream_t stream) {
  switch (split_k_for(p.N, p.K / kChunkElems, kThreads / kWarpSize)) {
    case 1: return launch_ms<kM, 1, kFp8In>(p, stream);
    case 2: return launch_ms<kM, 2, kFp8In>(p, stream);
    case 4: return launch_ms<kM, 4, kFp8In>(p, stream);
    default: return launch_ms<kM, 8, kFp8In>(p, stream);
  }
}

template <bool kFp8In>
void launch_in(const GemvNvfp4Params& p, cudaStream_t stream) {
  // Round M up to a compiled batch width; rows >= p.M are skipped inside.
  if (p.M == 1) launch_m<1, kFp8In>(p, stream);
  else if (p.M == 2) launch_m<2, kFp8In>(p, stream);
  else if (p.M <= 4) launch_m<4, kFp8In>(p, stream);
  else launch_m<8, kFp8In>(p, stream);
}

}  // namespace

void launch_gemv_nvfp4(const GemvNvfp4Params& p, cudaStream_t stream) {
  DSV4_CHECK(p.w && p.w_scale && p.y);
  DSV4_CHECK_MSG((p.x_fp8 != nullptr) != (p.x_bf16 != nullptr), "exactly one of x_fp8, x_bf16");
  DSV4_CHECK_MSG(p.M >= 1 && p.M <= kGemvMaxBatch, "M=", p.M);
  const int k_align = p.x_fp8 ? kActBlockSize : kChunkElems;
  DSV4_CHECK_MSG(p.N >= 1 && p.K >= k_align && p.K % k_align == 0, "N=", p.N, " K=", p.K);
  DSV4_CHECK(reinterpret_cast<uintptr_t>(p.w) % 16 == 0 && reinterpret_cast<uintptr_t>(p.w_scale) % 2 == 0);
  if (p.x_fp8) {
    DSV4_CHECK(p.x_scale && reinterpret_cast<uintptr_t>(p.x_fp8) % 16 == 0);
    launch_in<true>(p, stream);
  } else {
    DSV4_CHECK(reinterpret_cast<uintptr_t>(p.x_bf16) % 16 == 0);
    launch_in<false>(p, stream);
  }
}

}  // namespace dsv4::cuda
