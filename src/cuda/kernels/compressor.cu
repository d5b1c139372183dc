// Compressor step kernels and launcher; see compressor.cuh for the contract. Launch 1: a block per
// window-closing token (a thread per channel) pools, norms, ropes; launch 2 refills the rings.
#include "cuda/kernels/compressor.cuh"

#include <algorithm>
#include <cmath>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kMaxThreads = 512;   // one thread per channel up to c = 512 (head_dim)
constexpr int kRingThreads = 256;  // ring copy: columns of one row
constexpr int kMaxSmemFloats = 12288;  // the pooled row lives in shared memory: ≤ 48 KiB

// Ring of the sequence in `slot`: ring_rows rows of coff·c floats.
__device__ __forceinline__ int64_t ring_base(const CompressorParams& p, int slot) {
  return int64_t(slot) * p.ring_rows * p.coff * p.c;
}

// Biased logit z_q + ape[q mod m] (§5) of position q, column col, for a chunk whose first row
// `first` is at position pos0: from the chunk when q ≥ pos0, else from the slot's ring, which
// stores the same FP32 sum (bit-identical: one IEEE add either way).
__device__ __forceinline__ float slot_logit(const CompressorParams& p, int q, int pos0, int first,
                                            int64_t ring, int col) {
  const int64_t cw = int64_t(p.coff) * p.c;
  if (q >= pos0) return p.z[(first + q - pos0) * cw + col] + p.ape[(q % p.m) * cw + col];
  return p.ring_z[ring + (q % p.ring_rows) * cw + col];
}
__device__ __forceinline__ float slot_value(const CompressorParams& p, int q, int pos0, int first,
                                            int64_t ring, int col) {
  const int64_t cw = int64_t(p.coff) * p.c;
  if (q >= pos0) return p.a[(first + q - pos0) * cw + col];
  return p.ring_a[ring + (q % p.ring_rows) * cw + col];
}

__global__ void __launch_bounds__(kMaxThreads) compressor_pool_kernel(CompressorParams p) {
  wait_for_prior_grids();
  extern __shared__ float y[];  // [c] pooled, then normalised (the RoPE pairs cross threads)
  __shared__ float warp_ss[kMaxThreads / kWarpSize];
  const int t = blockIdx.x;
  const int pos = p.rows.pos[t];
  if (pos < 0 || (pos + 1) % p.m != 0) {  // block-uniform: padding, or token t closes no window (§5.4)
    if (threadIdx.x == 0) p.entry_idx[t] = -1;
    return;
  }
  const int first = p.rows.first[t], pos0 = p.rows.pos[first];
  const int64_t ring = ring_base(p, p.rows.slot[t]);
  const int j = (pos + 1) / p.m - 1;
  const int w0 = pos + 1 - p.m;  // first position of window j: the RoPE position (§5.3)
  // §5.2 CSA: slots = previous window through series A (columns 0..c−1; absent for j = 0) ∪ this
  // window through series B (columns c..2c−1). §5.1 HCA: this window, columns 0..c−1.
  const bool has_a = p.coff == 2 && j > 0;
  const int off_b = (p.coff - 1) * p.c;

  float ss = 0.0f;
  for (int e = threadIdx.x; e < p.c; e += blockDim.x) {
    float mx = -INFINITY;
    if (has_a)
      for (int q = w0 - p.m; q < w0; ++q) mx = fmaxf(mx, slot_logit(p, q, pos0, first, ring, e));
    for (int q = w0; q <= pos; ++q) mx = fmaxf(mx, slot_logit(p, q, pos0, first, ring, off_b + e));
    float den = 0.0f, num = 0.0f;
    if (has_a)
      for (int q = w0 - p.m; q < w0; ++q) {
        const float w = expf(slot_logit(p, q, pos0, first, ring, e) - mx);
        den += w;
        num = fmaf(w, slot_value(p, q, pos0, first, ring, e), num);
      }
    for (int q = w0; q <= pos; ++q) {
      const float w = expf(slot_logit(p, q, pos0, first, ring, off_b + e) - mx);
      den += w;
      num = fmaf(w, slot_value(p, q, pos0, first, ring, off_b + e), num);
    }
    const float v = num / den;
    y[e] = v;
    ss = fmaf(v, v, ss);
  }

  // §5.3 step 1: RMSNorm in FP32 over the c channels (one block reduction).
  ss = warp_sum(ss);
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  if (lane == 0) warp_ss[warp] = ss;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < int(blockDim.x) / kWarpSize; ++w) total += warp_ss[w];
  const float r = rsqrtf(total / float(p.c) + p.eps);
  __nv_bfloat16* out = p.entry + int64_t(t) * p.c;
  const int nope = p.c - p.rope_dim;
  for (int e = threadIdx.x; e < p.c; e += blockDim.x) {
    const float v = y[e] * r * __bfloat162float(p.norm[e]);
    if (e < nope)
      out[e] = __float2bfloat16_rn(v);
    else
      y[e] = v;  // each thread rewrites only its own channels: no race with the reads above
  }
  __syncthreads();

  // §5.3 step 2, §4.4: interleaved pairs of the last rope_dim dims at position j·m, FP32 angle.
  for (int i = threadIdx.x; i < p.rope_dim / 2; i += blockDim.x) {
    const float angle = float(w0) * p.inv_freq[i];
    float s, cs;
    sincosf(angle, &s, &cs);  // full-range reduction (no fast-math), as rope.cu
    const float x0 = y[nope + 2 * i], x1 = y[nope + 2 * i + 1];
    out[nope + 2 * i] = __float2bfloat16_rn(x0 * cs - x1 * s);
    out[nope + 2 * i + 1] = __float2bfloat16_rn(x0 * s + x1 * cs);
  }
  if (threadIdx.x == 0) p.entry_idx[t] = j;
}

// Block t writes row t (position q) into its slot's ring row q mod ring_rows, a and z + ape, when
// q is among the last ring_rows positions of its chunk (§5.5: the current window and, for CSA, the
// previous one, plus the rollback margin a resumed-earlier sequence reads).
__global__ void __launch_bounds__(kRingThreads) compressor_ring_kernel(CompressorParams p) {
  wait_for_prior_grids();
  const int t = int(blockIdx.x);
  const int q = p.rows.pos[t];
  if (q < 0 || p.rows.pos[p.rows.last[t]] - q >= p.ring_rows) return;  // block-uniform
  const int64_t cw = int64_t(p.coff) * p.c;
  const int64_t dst = ring_base(p, p.rows.slot[t]) + int64_t(q % p.ring_rows) * cw;
  const int64_t src = int64_t(t) * cw, bias = int64_t(q % p.m) * cw;
  for (int64_t col = threadIdx.x; col < cw; col += kRingThreads) {
    p.ring_a[dst + col] = p.a[src + col];
    p.ring_z[dst + col] = p.z[src + col] + p.ape[bias + col];
  }
}

}  // namespace

void launch_compressor(const CompressorParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.a && p.z && p.ape && p.norm && p.inv_freq && p.rows.pos && p.rows.slot && p.rows.first &&
             p.rows.last && p.ring_a && p.ring_z && p.entry && p.entry_idx);
  DSV4_CHECK_MSG(p.T >= 0 && p.m >= 1 && (p.coff == 1 || p.coff == 2) && p.c >= 1 && p.c <= kMaxSmemFloats,
                 "compressor T=", p.T, " m=", p.m, " coff=", p.coff, " c=", p.c);
  // A ring shorter than the pooled span would hand a window rows that later positions overwrote.
  DSV4_CHECK_MSG(p.ring_rows >= p.coff * p.m, "compressor ring_rows=", p.ring_rows, " < coff·m=", p.coff * p.m);
  DSV4_CHECK_MSG(p.rope_dim > 0 && p.rope_dim % 2 == 0 && p.rope_dim <= p.c, "compressor rope_dim=", p.rope_dim,
                 " c=", p.c);
  if (p.T == 0) return;
  const int threads = std::min((p.c + kWarpSize - 1) / kWarpSize * kWarpSize, kMaxThreads);
  launch_kernel(compressor_pool_kernel, unsigned(p.T), unsigned(threads), size_t(p.c) * sizeof(float), stream, p);
  // Written after the pooling above so that launch reads each ring as it was at its chunk's start.
  launch_kernel(compressor_ring_kernel, unsigned(p.T), kRingThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
