// FP4 expert GEMV kernel and launcher; see gemv_mxfp4.cuh for the contract.
// Block = 8 warps × 4 rows = 32 output rows of one selection. The selection's x is dequantised once into
// shared memory (FP32, interleaved so that each lane's 16-byte reads are bank-conflict free);
// each lane then streams 16-byte weight chunks = 32 E2M1 values = exactly one MXFP4 scale block
// or two NVFP4 scale blocks.
#include "cuda/kernels/gemv_mxfp4.cuh"

#include <cuda_bf16.h>

#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/gemv_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
// Each warp walks 4 consecutive rows so that one block (32 rows) amortises staging x.
constexpr int kRowsPerWarp = 4;
constexpr int kRowsPerBlock = kThreads / kWarpSize * kRowsPerWarp;
constexpr int kChunkBytes = 16;                        // one 16-byte load
constexpr int kChunkElems = 2 * kChunkBytes;           // = 32 E2M1 values
static_assert(kChunkElems == kMXFP4BlockSize, "one load covers exactly one MXFP4 scale block");
static_assert(kChunkElems == 2 * kNVFP4BlockSize, "one load covers exactly two NVFP4 scale blocks");
constexpr int kVec = 4;                                // floats per shared-memory float4
constexpr int kVecsPerChunk = kChunkElems / kVec;      // 8
constexpr int kUnroll = 4;                             // weight chunks in flight per lane

// The scale bytes of one 16-byte weight chunk: one UE8M0 (MXFP4) or two E4M3 (NVFP4, low byte =
// first 16 elements).
template <ExpertWeightFormat kFmt>
using ChunkScale = std::conditional_t<kFmt == ExpertWeightFormat::kNVFP4, uint16_t, uint8_t>;

template <ExpertWeightFormat kFmt, typename OutT>
__global__ void __launch_bounds__(kThreads) gemv_fp4_kernel(GemvMxfp4Params p) {
  wait_for_prior_grids();
  constexpr bool kNv = kFmt == ExpertWeightFormat::kNVFP4;
  // xs[j * n_chunks + c] = x[32c + 4j .. 32c + 4j + 3]: lane c reads float4 j at consecutive
  // addresses across the warp (conflict-free), instead of a 128-byte stride (8-way conflicts).
  extern __shared__ float4 xs[];
  const int s = blockIdx.y;
  const int n_chunks = p.K / kChunkElems;
  const int x_row = s / p.sel_per_x;
  const uint8_t* x = p.x + int64_t(x_row) * p.K;
  const uint8_t* x_scale = p.x_scale + int64_t(x_row) * (p.K / kActBlockSize);
  for (int v = threadIdx.x; v < p.K / kVec; v += kThreads) {
    const int c = v / kVecsPerChunk, j = v % kVecsPerChunk;
    const float sx = e8m0_to_float(x_scale[(v * kVec) / kActBlockSize]);
    const uint32_t q = *reinterpret_cast<const uint32_t*>(x + v * kVec);
    const float2 a = e4m3x2_to_float2(uint16_t(q)), b = e4m3x2_to_float2(uint16_t(q >> 16));
    xs[j * n_chunks + c] = make_float4(a.x * sx, a.y * sx, b.x * sx, b.y * sx);
  }
  __syncthreads();

  const int lane = threadIdx.x % kWarpSize;
  const int e = p.expert_idx[s];
  const bool masked = e < 0, bad = e >= p.n_experts;
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int n = blockIdx.x * kRowsPerBlock + (threadIdx.x / kWarpSize) * kRowsPerWarp + r;
    if (n >= p.N) return;
    OutT* y = static_cast<OutT*>(p.y) + int64_t(s) * p.N + n;
    if (masked || bad) {
      if (lane == 0) {
        const float v = masked ? 0.0f : __int_as_float(0x7fc00000);
        if constexpr (sizeof(OutT) == 2) *y = __float2bfloat16_rn(v); else *y = v;
      }
      continue;
    }
    const int64_t row = int64_t(e) * p.N + n;
    const uint8_t* w_row = p.w + row * (p.K / 2);
    const ChunkScale<kFmt>* ws_row = reinterpret_cast<const ChunkScale<kFmt>*>(p.w_scale) + row * n_chunks;

    float acc = 0.0f;
    for (int c0 = lane; c0 < n_chunks; c0 += kWarpSize * kUnroll) {
      uint4 wv[kUnroll];
      ChunkScale<kFmt> sb[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int c = c0 + u * kWarpSize;
        if (c < n_chunks) {
          wv[u] = load_stream(w_row + int64_t(c) * kChunkBytes);
          sb[u] = ws_row[c];
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int c = c0 + u * kWarpSize;
        if (c >= n_chunks) break;
        const uint32_t words[4] = {wv[u].x, wv[u].y, wv[u].z, wv[u].w};
        float dot = 0.0f, dot_hi = 0.0f;  // NVFP4: elements 0..15 into dot, 16..31 into dot_hi
#pragma unroll
        for (int i = 0; i < 4; ++i) {  // word i = elements 8i..8i+7 = float4s 2i, 2i+1
          float& d = (kNv && i >= 2) ? dot_hi : dot;
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const float4 xv = xs[(2 * i + h) * n_chunks + c];
            const float2 w01 = e2m1x2_to_float2_scaled(words[i] >> (16 * h));
            const float2 w23 = e2m1x2_to_float2_scaled(words[i] >> (16 * h + 8));
            d = fmaf(w01.x, xv.x, d);
            d = fmaf(w01.y, xv.y, d);
            d = fmaf(w23.x, xv.z, d);
            d = fmaf(w23.y, xv.w, d);
          }
        }
        if constexpr (kNv) {
          const float2 sv = e4m3x2_to_float2(sb[u]);  // E4M3 · 2^14 is exact in FP32
          acc = fmaf(dot, sv.x * kE2M1AsHalfScale, acc);
          acc = fmaf(dot_hi, sv.y * kE2M1AsHalfScale, acc);
        } else {
          acc = fmaf(dot, e8m0_to_float(sb[u]) * kE2M1AsHalfScale, acc);
        }
      }
    }
    acc = warp_sum(acc);
    // §11.6: the per-tensor weight_scale_2 multiplies the whole row once (one FP32 rounding).
    if constexpr (kNv) acc *= p.global_scale[e];
    if (lane == 0) {
      if constexpr (sizeof(OutT) == 2) *y = __float2bfloat16_rn(acc); else *y = acc;
    }
  }
}

template <ExpertWeightFormat kFmt>
void launch_format(const GemvMxfp4Params& p, cudaStream_t stream) {
  const dim3 grid((p.N + kRowsPerBlock - 1) / kRowsPerBlock, p.n_sel);
  const size_t smem = size_t(p.K) * sizeof(float);  // ≤ 32 KiB: under the 48 KiB default
  if (p.out_bf16)
    launch_kernel(gemv_fp4_kernel<kFmt, __nv_bfloat16>, grid, kThreads, smem, stream, p);
  else
    launch_kernel(gemv_fp4_kernel<kFmt, float>, grid, kThreads, smem, stream, p);
}

}  // namespace

void launch_gemv_mxfp4(const GemvMxfp4Params& p, cudaStream_t stream) {
  DSV4_CHECK(p.w && p.w_scale && p.expert_idx && p.x && p.x_scale && p.y);
  DSV4_CHECK_MSG(p.n_sel >= 1 && p.n_sel <= kMaxGridY && p.n_experts >= 1 && p.N >= 1, "n_sel=", p.n_sel, " N=", p.N);
  DSV4_CHECK_MSG(p.sel_per_x >= 1, "sel_per_x=", p.sel_per_x);
  DSV4_CHECK_MSG(p.K % kActBlockSize == 0 && p.K > 0 && p.K <= kMxfp4MaxK, "K=", p.K);
  DSV4_CHECK(reinterpret_cast<uintptr_t>(p.w) % 16 == 0 && reinterpret_cast<uintptr_t>(p.x) % 4 == 0);
  if (p.format == ExpertWeightFormat::kNVFP4) {
    DSV4_CHECK(p.global_scale && reinterpret_cast<uintptr_t>(p.w_scale) % 2 == 0);
    launch_format<ExpertWeightFormat::kNVFP4>(p, stream);
  } else {
    DSV4_CHECK_MSG(p.format == ExpertWeightFormat::kMXFP4, "format=", int(p.format));
    launch_format<ExpertWeightFormat::kMXFP4>(p, stream);
  }
}

}  // namespace dsv4::cuda
