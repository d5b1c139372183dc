// RMSNorm (+ FP8 1×128 quantisation) kernels and their launcher; see rmsnorm.cuh for the contract.
// Rows whose width is a multiple of 8 (every V4 norm) take 16-byte accesses: a warp per row up to
// kWarpRowMaxDim (q_norm 1024, per-head q and kv 512), a block per row above (hidden 4096/7168);
// pass 1 sums x² per element position over the row's chunks, pass 2 re-reads x (L1) and writes y
// (and q, one 1×128 block per half-warp; or the RoPE of the row's rope slice). Other widths take
// the scalar block-per-row kernel.
#include "cuda/kernels/rmsnorm.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"
#include "cuda/kernels/rope.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;  // 8 warps
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kChunk = 4 * kWarpSize;  // scalar kernel: 128 elements per warp step = one activation block
constexpr int kVec = 8;                // BF16 per 16-byte access
constexpr int kWarpRowMaxDim = 2048;   // ≤ 8 chunks per lane
constexpr int kVecPerQuantBlock = kActBlockSize / kVec;  // 16 lanes hold one 1×128 block
static_assert(kVecPerQuantBlock == kWarpSize / 2, "a half-warp per quantisation block");

template <bool kQuant>
__global__ void __launch_bounds__(kThreads) rmsnorm_kernel(RmsNormParams p) {
  wait_for_prior_grids();
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

// kWarpRow: a warp per row (8 rows per block); else a block per row. Σx²: per element position
// e, FP32 FMAs over the thread's ≤ 8 chunks, then a 3-level tree over e, a 5-level warp tree and
// (block rows) the 8 warps in order — depth ≤ dim/(8·threads) + 16. kRope: the chunks of the rope
// slice are rotated (rope_pair, as rope.cu) after their BF16 rounding, before the store.
template <bool kWarpRow, bool kQuant, bool kRope = false>
__global__ void __launch_bounds__(kThreads) rmsnorm_vec_kernel(RmsNormParams p) {
  wait_for_prior_grids();
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int row = kWarpRow ? int(blockIdx.x) * kWarps + warp : int(blockIdx.x);
  if (row >= p.n_rows) return;  // a whole warp (warp rows) or the whole block
  constexpr int kRowThreads = kWarpRow ? kWarpSize : kThreads;
  const int tid = kWarpRow ? lane : int(threadIdx.x), n_chunks = p.dim / kVec;
  const uint4* x = reinterpret_cast<const uint4*>(p.x + int64_t(row) * p.dim);

  float acc[kVec] = {};
  for (int c = tid; c < n_chunks; c += kRowThreads) {
    float v[kVec];
    bf16x8_to_floats(x[c], v);  // plain loads: y may alias x (in place), so no read-only-cache path
#pragma unroll
    for (int e = 0; e < kVec; ++e) acc[e] = fmaf(v[e], v[e], acc[e]);
  }
  float ss = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  ss = warp_sum(ss);
  if constexpr (!kWarpRow) {
    __shared__ float warp_ss[kWarps];
    if (lane == 0) warp_ss[warp] = ss;
    __syncthreads();
    ss = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) ss += warp_ss[w];
  }
  const float r = rsqrtf(ss / float(p.dim) + p.eps);

  uint4* y = reinterpret_cast<uint4*>(p.y + int64_t(row) * p.dim);
  const unsigned half_mask = 0xffffu << (lane & 16);  // with q, dim % 128 == 0: whole half-warps
  for (int c = tid; c < n_chunks; c += kRowThreads) {
    float v[kVec], w[kVec];
    bf16x8_to_floats(x[c], v);
    if (p.weight) bf16x8_to_floats(__ldg(reinterpret_cast<const uint4*>(p.weight) + c), w);
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      float t = v[e] * r;  // (x·r)·w, as the scalar kernel
      if (p.weight) t *= w[e];
      v[e] = __bfloat162float(__float2bfloat16_rn(t));  // §12: the quantiser sees the BF16 y
    }
    if constexpr (kRope) {
      const int first = p.dim - p.rope_dim;  // a multiple of kVec (the launcher's condition)
      if (c * kVec >= first) {
        const float t = float(p.pos[row / p.rows_per_pos]);
#pragma unroll
        for (int e = 0; e < kVec; e += 2) {
          rope_pair(v[e], v[e + 1], t * p.inv_freq[(c * kVec + e - first) / 2], false);
          v[e] = __bfloat162float(__float2bfloat16_rn(v[e]));
          v[e + 1] = __bfloat162float(__float2bfloat16_rn(v[e + 1]));
        }
      }
    }
    y[c] = floats_to_bf16x8(v);
    if constexpr (kQuant) {
      float amax = 0.0f;
#pragma unroll
      for (int e = 0; e < kVec; ++e) amax = fmaxf(amax, fabsf(v[e]));
#pragma unroll
      for (int off = 1; off < kVecPerQuantBlock; off *= 2) amax = fmaxf(amax, __shfl_xor_sync(half_mask, amax, off));
      const uint8_t sb = act_scale_byte(amax);
      const float inv = inv_e8m0(sb), s = e8m0_to_float(sb);
      uint32_t packed[2] = {0, 0};
      float fq[kVec];
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        const uint8_t b = float_to_e4m3(v[e] * inv);
        packed[e / 4] |= uint32_t(b) << (8 * (e % 4));
        fq[e] = e4m3x2_to_float2(uint16_t(b)).x * s;  // exact in BF16: E4M3 × a power of two
      }
      reinterpret_cast<uint2*>(p.q + int64_t(row) * p.dim)[c] = make_uint2(packed[0], packed[1]);
      if (lane % kVecPerQuantBlock == 0) p.q_scale[int64_t(row) * (p.dim / int(kActBlockSize)) + c / kVecPerQuantBlock] = sb;
      if (p.fake) reinterpret_cast<uint4*>(p.fake + int64_t(row) * p.dim)[c] = floats_to_bf16x8(fq);
    }
  }
}

template <bool kWarpRow, bool kQuant, bool kRope = false>
void launch_vec(const RmsNormParams& p, cudaStream_t stream) {
  const int blocks = kWarpRow ? (p.n_rows + kWarps - 1) / kWarps : p.n_rows;
  launch_kernel(rmsnorm_vec_kernel<kWarpRow, kQuant, kRope>, blocks, kThreads, 0, stream, p);
}

// Every other shape with pos: the norm, then rope.cu on its output.
void launch_norm_then_rope(RmsNormParams p, cudaStream_t stream) {
  RopeApplyParams r;
  r.x = p.y;
  r.pos = p.pos;
  r.inv_freq = p.inv_freq;
  r.n_rows = p.n_rows / p.rows_per_pos;
  r.n_heads = p.rows_per_pos;
  r.head_dim = p.dim;
  r.rope_dim = p.rope_dim;
  r.row_stride = int64_t(p.rows_per_pos) * p.dim;
  p.pos = nullptr;
  launch_rmsnorm(p, stream);
  launch_rope(r, stream);
}

}  // namespace

void launch_rmsnorm(const RmsNormParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.x && p.y && p.n_rows >= 0 && p.dim >= 1);
  DSV4_CHECK_MSG(!p.q || (p.q_scale && p.dim % kChunk == 0), "FP8 quantisation needs dim % 128 == 0, dim=", p.dim);
  DSV4_CHECK_MSG(!p.fake || p.q, "rmsnorm: fake-quant output needs q");
  DSV4_CHECK_MSG(!p.pos || (p.inv_freq && p.rope_dim > 0 && p.rope_dim % 2 == 0 && p.rope_dim <= p.dim &&
                            p.rows_per_pos >= 1 && p.n_rows % p.rows_per_pos == 0),
                 "rmsnorm with RoPE: rope_dim=", p.rope_dim, " dim=", p.dim, " rows=", p.n_rows, " rows_per_pos=",
                 p.rows_per_pos);
  if (p.n_rows == 0) return;
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  const bool vec = p.dim % kVec == 0 && aligned(p.x) && aligned(p.y) && (!p.weight || aligned(p.weight)) &&
                   (!p.q || reinterpret_cast<uintptr_t>(p.q) % 8 == 0) && (!p.fake || aligned(p.fake));
  if (p.pos) {
    if (vec && p.dim <= kWarpRowMaxDim && !p.q && (p.dim - p.rope_dim) % kVec == 0)
      return launch_vec<true, false, true>(p, stream);
    return launch_norm_then_rope(p, stream);
  }
  if (vec) {
    const bool warp_row = p.dim <= kWarpRowMaxDim;
    if (warp_row) return p.q ? launch_vec<true, true>(p, stream) : launch_vec<true, false>(p, stream);
    return p.q ? launch_vec<false, true>(p, stream) : launch_vec<false, false>(p, stream);
  }
  DSV4_CHECK_MSG(!p.fake, "rmsnorm: fake-quant output needs 16-byte aligned rows of a multiple of 8, dim=", p.dim);
  if (p.q)
    launch_kernel(rmsnorm_kernel<true>, p.n_rows, kThreads, 0, stream, p);
  else
    launch_kernel(rmsnorm_kernel<false>, p.n_rows, kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
