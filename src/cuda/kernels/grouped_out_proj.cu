// Grouped output projection kernel and launcher; see grouped_out_proj.cuh for the contract.
// A GEMV over the G·R weight rows in which row n reads the o slice of its group g = n / R: one
// warp (or kSplit warps) per row streams it in 16-byte chunks past L1, and each chunk serves up to
// kGemvMaxBatch tokens of the block's token tile (grid y), so decode (T = 1) is one weight pass.
#include "cuda/kernels/grouped_out_proj.cuh"

#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/gemv_common.cuh"
#include "cuda/kernels/gemv_fp8.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunkBytes = 16;  // one 16-byte weight load: 16 E4M3 or 8 BF16 values
constexpr int kFp8ChunksPerBlock = kFP8BlockSize / kChunkBytes;  // 8 FP8 chunks share a tile scale
constexpr int kBf16PerUint4 = 8;
constexpr int kUnroll = 4;        // independent weight loads in flight per lane

// 16 E4M3 weights (one chunk) against 16 BF16 activations (two uint4); products of an 8-bit and
// a 4-bit significand are exact in FP32.
__device__ __forceinline__ float dot16_e4m3_bf16(const uint4& w, const uint4& a0, const uint4& a1) {
  const uint32_t wv[4] = {w.x, w.y, w.z, w.w}, av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // elements 4i + 2h, 4i + 2h + 1
      const float2 fw = e4m3x2_to_float2(uint16_t(wv[i] >> (16 * h)));
      const uint32_t a = av[2 * i + h];
      s = fmaf(fw.x, __uint_as_float(a << 16), s);
      s = fmaf(fw.y, __uint_as_float(a & 0xffff0000u), s);
    }
  }
  return s;
}

// kM tokens per block (grid y = token tiles), kSplit warps per weight row (gemv_common.cuh).
// Min 1 block per SM: left to itself ptxas capped the decode FP8 instance at 48 registers (five
// blocks per SM) and spilled; 54 registers leave four blocks = 32 warps × 4 × 16-byte loads in
// flight per SM, above what HBM latency × bandwidth needs (~25 KB per SM on an H100).
template <int kM, int kSplit, bool kFp8>
__global__ void __launch_bounds__(kThreads, 1) grouped_out_proj_kernel(GroupedOutProjParams p) {
  constexpr int kWarps = kThreads / kWarpSize, kColsPerBlock = kWarps / kSplit;
  constexpr int kChunkElems = kFp8 ? kChunkBytes : kChunkBytes / 2;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int part = warp % kSplit;
  const int n_rows = p.G * p.R;
  const int n = blockIdx.x * kColsPerBlock + warp / kSplit;
  const bool valid = n < n_rows;  // no early return: the split reduction below synchronises
  const int row = valid ? n : 0, g = row / p.R, t0 = blockIdx.y * kM;
  const int n_chunks = p.K / kChunkElems;
  const uint8_t* w_row = kFp8 ? p.w_fp8 + int64_t(row) * p.K
                              : reinterpret_cast<const uint8_t*>(p.w_bf16 + int64_t(row) * p.K);
  // §4.5 / §11.2: the tile scale belongs to the absolute row g·R + r (a tile may span groups).
  const uint8_t* ws_row = kFp8 ? p.w_scale + int64_t(row / kFP8BlockSize) * (p.K / kFP8BlockSize) : nullptr;
  // o row of token t0 + m, group g: o + ((t0 + m)·G + g)·K (§4.5: heads of a group contiguous).
  const uint4* o_base = reinterpret_cast<const uint4*>(p.o + (int64_t(t0) * p.G + g) * p.K);
  const int64_t o_stride = int64_t(p.G) * p.K / kBf16PerUint4;  // one token, in uint4
  float acc[kM];
#pragma unroll
  for (int m = 0; m < kM; ++m) acc[m] = 0.0f;

  constexpr int kStride = kWarpSize * kSplit;
  for (int c0 = part * kWarpSize + lane; valid && c0 < n_chunks; c0 += kStride * kUnroll) {
    uint4 wv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kStride;
      if (c < n_chunks) wv[u] = load_stream(w_row + int64_t(c) * kChunkBytes);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kStride;
      if (c >= n_chunks) break;
      if constexpr (kFp8) {
        // The power-of-two scale makes dot · sw exact: the sum equals Σ o · bf16(w) of §12.
        const float sw = e8m0_to_float(ws_row[c / kFp8ChunksPerBlock]);
#pragma unroll
        for (int m = 0; m < kM; ++m) {
          if (t0 + m >= p.T) break;
          const int a = 2 * c;  // 16 BF16 activations = two uint4
          const uint4* o = o_base + m * o_stride + a;
          acc[m] = fmaf(dot16_e4m3_bf16(wv[u], __ldg(o), __ldg(o + 1)), sw, acc[m]);
        }
      } else {
        static_assert(kChunkElems == kBf16PerUint4, "one BF16 weight chunk meets one activation uint4");
#pragma unroll
        for (int m = 0; m < kM; ++m) {
          if (t0 + m >= p.T) break;
          acc[m] += dot8_bf16(wv[u], __ldg(o_base + m * o_stride + c));
        }
      }
    }
  }
  split_k_reduce<kWarps, kM, kSplit>(acc, warp, lane, part);
  if (!valid || part != 0 || lane != 0) return;
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    if (t0 + m >= p.T) break;
    p.z[int64_t(t0 + m) * n_rows + n] = __float2bfloat16_rn(acc[m]);
  }
}

template <int kM, int kSplit>
void launch_ms(const GroupedOutProjParams& p, cudaStream_t stream) {
  constexpr int kColsPerBlock = kThreads / kWarpSize / kSplit;
  const dim3 grid((p.G * p.R + kColsPerBlock - 1) / kColsPerBlock, (p.T + kM - 1) / kM);
  if (p.w_fp8)
    grouped_out_proj_kernel<kM, kSplit, true><<<grid, kThreads, 0, stream>>>(p);
  else
    grouped_out_proj_kernel<kM, kSplit, false><<<grid, kThreads, 0, stream>>>(p);
  DSV4_CUDA_CHECK_LAUNCH();
}

template <int kM>
void launch_m(const GroupedOutProjParams& p, cudaStream_t stream) {
  // All token tiles stream at once: count their columns (at or above the target: no split).
  const int64_t cols = int64_t(p.G) * p.R * ((p.T + kM - 1) / kM);
  const int n_chunks = p.K / (p.w_fp8 ? kChunkBytes : kChunkBytes / 2);
  switch (split_k_for(int(std::min<int64_t>(cols, kSplitTargetWarps)), n_chunks, kThreads / kWarpSize)) {
    case 1: return launch_ms<kM, 1>(p, stream);
    case 2: return launch_ms<kM, 2>(p, stream);
    case 4: return launch_ms<kM, 4>(p, stream);
    default: return launch_ms<kM, 8>(p, stream);
  }
}

}  // namespace

void launch_grouped_out_proj(const GroupedOutProjParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.o && p.z);
  DSV4_CHECK_MSG((p.w_fp8 != nullptr) != (p.w_bf16 != nullptr), "exactly one of w_fp8 / w_bf16");
  DSV4_CHECK_MSG(p.G >= 1 && p.R >= 1 && int64_t(p.G) * p.R <= INT32_MAX, "G=", p.G, " R=", p.R);
  DSV4_CHECK_MSG(p.T >= 1 && (p.T + kGemvMaxBatch - 1) / kGemvMaxBatch <= kMaxGridY, "T=", p.T);
  if (p.w_fp8) {
    DSV4_CHECK(p.w_scale != nullptr);
    DSV4_CHECK_MSG(p.K >= kFP8BlockSize && p.K % kFP8BlockSize == 0, "K=", p.K);
    DSV4_CHECK(reinterpret_cast<uintptr_t>(p.w_fp8) % 16 == 0);
  } else {
    DSV4_CHECK_MSG(p.K >= kBf16PerUint4 && p.K % kBf16PerUint4 == 0, "K=", p.K);
    DSV4_CHECK(reinterpret_cast<uintptr_t>(p.w_bf16) % 16 == 0);
  }
  DSV4_CHECK(reinterpret_cast<uintptr_t>(p.o) % 16 == 0);
  // Tokens per block: a weight chunk is reused for up to kGemvMaxBatch tokens; decode (T = 1)
  // keeps a single accumulator.
  if (p.T == 1) launch_m<1>(p, stream);
  else if (p.T == 2) launch_m<2>(p, stream);
  else if (p.T <= 4) launch_m<4>(p, stream);
  else launch_m<kGemvMaxBatch>(p, stream);
}

}  // namespace dsv4::cuda
