// Sparse attention kernel and launcher; see sparse_attention.cuh for the contract.
// Correct-first version: one block per (query, head), 128 threads, keys in tiles of 32.
// Logits: each warp takes 8 keys of the tile, lane l dots 16 of the 512 dims (lanes 0–27 the
// E4M3 NoPE dims with their tile scale, lanes 28–31 the BF16 RoPE dims). Values: thread t owns
// output dims 4t..4t+3 and accumulates Σ p·v over the tile with an online-softmax rescale.
// Every head re-reads the same rows (through L2); a head-batched wgmma kernel replaces this.
#include "cuda/kernels/sparse_attention.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/kv_cache.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kTileKeys = 32;
constexpr int kDimsPerLane = kKvDim / kWarpSize;    // 16 (logit phase)
constexpr int kDimsPerThread = kKvDim / kThreads;   // 4 (value phase)
constexpr int kNopeLanes = kKvNope / kDimsPerLane;  // 28
static_assert(kKvNope % kDimsPerLane == 0 && kKvTile % kDimsPerLane == 0, "a lane's 16 dims share one scale");
static_assert(kKvTile % kDimsPerThread == 0 && kKvNope % kDimsPerThread == 0, "a thread's 4 dims share one scale");

struct RowPtrs {
  const uint8_t* data;    // [576]
  const uint8_t* scales;  // [8]
};
__device__ __forceinline__ RowPtrs row_ptrs(const SparseAttnParams& p, int slot) {
  const int64_t page = slot / p.block_size, off = slot % p.block_size;
  const uint8_t* base = p.cache + page * kv_page_bytes(p.block_size);
  return {base + off * kKvRowDataBytes, base + int64_t(p.block_size) * kKvRowDataBytes + off * kKvRowScaleBytes};
}

__global__ void __launch_bounds__(kThreads) sparse_attention_kernel(SparseAttnParams p) {
  const int qi = blockIdx.y, h = blockIdx.x;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const __nv_bfloat16* q = p.q + (int64_t(qi) * p.H + h) * kKvDim;
  const int32_t* idx = p.indices + int64_t(qi) * p.n_idx;

  float qv[kDimsPerLane];  // this lane's 16 query dims, pre-multiplied by the softmax scale
#pragma unroll
  for (int j = 0; j < kDimsPerLane; ++j) qv[j] = __bfloat162float(q[lane * kDimsPerLane + j]) * p.softmax_scale;

  __shared__ float logit[kTileKeys];
  __shared__ int32_t slots[kTileKeys];
  float m = -INFINITY, l = 0.0f;
  float acc[kDimsPerThread] = {0.0f, 0.0f, 0.0f, 0.0f};
  const int d0 = threadIdx.x * kDimsPerThread;

  for (int k0 = 0; k0 < p.n_idx; k0 += kTileKeys) {
    if (threadIdx.x < kTileKeys) slots[threadIdx.x] = k0 + threadIdx.x < p.n_idx ? idx[k0 + threadIdx.x] : -1;
    __syncthreads();
    for (int j = warp; j < kTileKeys; j += kWarps) {
      const int slot = slots[j];
      float s = 0.0f;
      if (slot >= 0) {
        const RowPtrs r = row_ptrs(p, slot);
        if (lane < kNopeLanes) {
          const uint4 raw = *reinterpret_cast<const uint4*>(r.data + lane * kDimsPerLane);
          const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const float2 a = e4m3x2_to_float2(uint16_t(w[i])), b = e4m3x2_to_float2(uint16_t(w[i] >> 16));
            s = fmaf(qv[4 * i], a.x, s);
            s = fmaf(qv[4 * i + 1], a.y, s);
            s = fmaf(qv[4 * i + 2], b.x, s);
            s = fmaf(qv[4 * i + 3], b.y, s);
          }
          s *= e8m0_to_float(r.scales[lane * kDimsPerLane / kKvTile]);
        } else {
          const __nv_bfloat16* rope = reinterpret_cast<const __nv_bfloat16*>(r.data + kKvNope) +
                                      (lane - kNopeLanes) * kDimsPerLane;
#pragma unroll
          for (int i = 0; i < kDimsPerLane; ++i) s = fmaf(qv[i], __bfloat162float(rope[i]), s);
        }
      }
      s = warp_sum(s);
      if (lane == 0) logit[j] = slot >= 0 ? s : -INFINITY;
    }
    __syncthreads();
    // Online softmax over this tile; every thread derives the same m and l from shared memory.
    float m_tile = -INFINITY;
#pragma unroll 8
    for (int j = 0; j < kTileKeys; ++j) m_tile = fmaxf(m_tile, logit[j]);
    const float m_new = fmaxf(m, m_tile);
    if (m_new != -INFINITY) {
      const float alpha = expf(m - m_new);  // m = −inf on the first valid tile: alpha = 0
      l *= alpha;
#pragma unroll
      for (int i = 0; i < kDimsPerThread; ++i) acc[i] *= alpha;
      for (int j = 0; j < kTileKeys; ++j) {
        if (slots[j] < 0) continue;
        const float pj = expf(logit[j] - m_new);
        l += pj;
        const RowPtrs r = row_ptrs(p, slots[j]);
        float v[kDimsPerThread];
        if (d0 < kKvNope) {
          const uint32_t raw = *reinterpret_cast<const uint32_t*>(r.data + d0);
          const float sc = e8m0_to_float(r.scales[d0 / kKvTile]);
          const float2 a = e4m3x2_to_float2(uint16_t(raw)), b = e4m3x2_to_float2(uint16_t(raw >> 16));
          v[0] = a.x * sc; v[1] = a.y * sc; v[2] = b.x * sc; v[3] = b.y * sc;
        } else {
          const __nv_bfloat162* rope = reinterpret_cast<const __nv_bfloat162*>(r.data + kKvNope + 2 * (d0 - kKvNope));
          const float2 a = __bfloat1622float2(rope[0]), b = __bfloat1622float2(rope[1]);
          v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
        }
#pragma unroll
        for (int i = 0; i < kDimsPerThread; ++i) acc[i] = fmaf(pj, v[i], acc[i]);
      }
      m = m_new;
    }
    __syncthreads();  // logit/slots are rewritten by the next tile
  }

  __nv_bfloat16* o = p.out + (int64_t(qi) * p.H + h) * kKvDim + d0;
  // §4.3 sink: exp(sink − m) joins the denominator only. No valid key: o = 0.
  const float inv = m == -INFINITY ? 0.0f : 1.0f / (l + expf(p.sink[h] - m));
  float ov[kDimsPerThread];
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) ov[i] = __bfloat162float(__float2bfloat16_rn(acc[i] * inv));
  if (d0 >= kKvNope) {  // §4.4 inverse RoPE on the BF16 output, pairs (2i, 2i+1) of the rope slice
    const float t = float(p.pos[qi]);
#pragma unroll
    for (int i = 0; i < kDimsPerThread; i += 2) {
      const int pair = (d0 - kKvNope + i) / 2;
      float sn, cs;
      sincosf(t * p.inv_freq[pair], &sn, &cs);
      const float x0 = ov[i], x1 = ov[i + 1];
      ov[i] = x0 * cs + x1 * sn;  // conjugate rotation: sin negated
      ov[i + 1] = x1 * cs - x0 * sn;
    }
  }
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) o[i] = __float2bfloat16_rn(ov[i]);
}

}  // namespace

void launch_sparse_attention(const SparseAttnParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.q && p.cache && p.indices && p.sink && p.pos && p.inv_freq && p.out);
  DSV4_CHECK_MSG(p.n_q >= 0 && p.n_q <= kMaxGridY && p.H >= 1 && p.n_idx >= 0 && p.block_size > 0, "n_q=", p.n_q, " H=", p.H,
                 " n_idx=", p.n_idx);
  if (p.n_q == 0) return;
  sparse_attention_kernel<<<dim3(p.H, p.n_q), kThreads, 0, stream>>>(p);
  DSV4_CUDA_CHECK_LAUNCH();
}

}  // namespace dsv4::cuda
