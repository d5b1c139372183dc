// Sparse attention kernel and launcher; see sparse_attention.cuh for the contract.
// Correct-first version, templated on the head dim D: one block per (query, head), 128 threads,
// keys in tiles of 32. Logits: each warp takes 8 keys of the tile, lane l dots D/32 dims (the
// first lanes the E4M3 NoPE dims with their tile scale, the last lanes the BF16 RoPE dims).
// Values: thread t owns output dims t·v … t·v+v−1 (v = 4 for D = 512, 2 for D = 128, so a RoPE
// pair never splits) and accumulates Σ p·v over the tile with an online-softmax rescale.
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

template <int D>
struct Shape {
  static constexpr int kNope = kv_nope(D);
  static constexpr int kDimsPerLane = D / kWarpSize;               // logit phase: 16 / 4
  static constexpr int kNopeLanes = kNope / kDimsPerLane;          // 28 / 16
  static constexpr int kDimsPerThread = D >= 4 * kThreads ? 4 : 2;  // value phase: 4 / 2
  static constexpr int kValueThreads = D / kDimsPerThread;         // 128 / 64
  static_assert(kDimsPerLane == 16 || kDimsPerLane == 4, "a lane loads its E4M3 bytes as one uint4 or one uint32");
  static_assert(kNope % kDimsPerLane == 0 && kKvTile % kDimsPerLane == 0, "a lane's dims share one scale");
  static_assert(kKvTile % kDimsPerThread == 0 && kNope % kDimsPerThread == 0, "a thread's dims share one scale");
  static_assert(kDimsPerThread % 2 == 0 && kValueThreads <= kThreads, "a thread holds whole RoPE pairs");
};

struct RowPtrs {
  const uint8_t* data;    // [kv_row_data_bytes(D)]
  const uint8_t* scales;  // [kv_row_scale_bytes(D)]
};
template <int D>
__device__ __forceinline__ RowPtrs row_ptrs(const SparseAttnParams& p, int slot) {
  const int64_t page = slot / p.block_size, off = slot % p.block_size;
  const uint8_t* base = p.cache + page * kv_page_bytes(p.block_size, D);
  return {base + off * kv_row_data_bytes(D), base + int64_t(p.block_size) * kv_row_data_bytes(D) + off * kv_row_scale_bytes(D)};
}

template <int D>
__global__ void __launch_bounds__(kThreads) sparse_attention_kernel(SparseAttnParams p) {
  using S = Shape<D>;
  constexpr int kNope = S::kNope, kDimsPerLane = S::kDimsPerLane, kDimsPerThread = S::kDimsPerThread;
  const int qi = blockIdx.y, h = blockIdx.x;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const __nv_bfloat16* q = p.q + (int64_t(qi) * p.H + h) * D;
  const int32_t* idx = p.indices + int64_t(qi) * p.n_idx;

  float qv[kDimsPerLane];  // this lane's query dims, pre-multiplied by the softmax scale
#pragma unroll
  for (int j = 0; j < kDimsPerLane; ++j) qv[j] = __bfloat162float(q[lane * kDimsPerLane + j]) * p.softmax_scale;

  __shared__ float logit[kTileKeys];
  __shared__ int32_t slots[kTileKeys];
  float m = -INFINITY, l = 0.0f;
  float acc[kDimsPerThread] = {};
  const int d0 = threadIdx.x * kDimsPerThread;
  const bool value_thread = threadIdx.x < S::kValueThreads;  // D = 128: threads 64–127 only score

  for (int k0 = 0; k0 < p.n_idx; k0 += kTileKeys) {
    if (threadIdx.x < kTileKeys) slots[threadIdx.x] = k0 + threadIdx.x < p.n_idx ? idx[k0 + threadIdx.x] : -1;
    __syncthreads();
    for (int j = warp; j < kTileKeys; j += kWarps) {
      const int slot = slots[j];
      float s = 0.0f;
      if (slot >= 0) {
        const RowPtrs r = row_ptrs<D>(p, slot);
        if (lane < S::kNopeLanes) {
          uint32_t w[kDimsPerLane / 4];  // 4 E4M3 bytes per word
          if constexpr (kDimsPerLane == 16) {
            const uint4 raw = *reinterpret_cast<const uint4*>(r.data + lane * kDimsPerLane);
            w[0] = raw.x, w[1] = raw.y, w[2] = raw.z, w[3] = raw.w;
          } else {
            w[0] = *reinterpret_cast<const uint32_t*>(r.data + lane * kDimsPerLane);
          }
#pragma unroll
          for (int i = 0; i < kDimsPerLane / 4; ++i) {
            const float2 a = e4m3x2_to_float2(uint16_t(w[i])), b = e4m3x2_to_float2(uint16_t(w[i] >> 16));
            s = fmaf(qv[4 * i], a.x, s);
            s = fmaf(qv[4 * i + 1], a.y, s);
            s = fmaf(qv[4 * i + 2], b.x, s);
            s = fmaf(qv[4 * i + 3], b.y, s);
          }
          s *= e8m0_to_float(r.scales[lane * kDimsPerLane / kKvTile]);
        } else {
          const __nv_bfloat16* rope = reinterpret_cast<const __nv_bfloat16*>(r.data + kNope) +
                                      (lane - S::kNopeLanes) * kDimsPerLane;
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
    if (m_new != -INFINITY && value_thread) {
      const float alpha = expf(m - m_new);  // m = −inf on the first valid tile: alpha = 0
      l *= alpha;
#pragma unroll
      for (int i = 0; i < kDimsPerThread; ++i) acc[i] *= alpha;
      for (int j = 0; j < kTileKeys; ++j) {
        if (slots[j] < 0) continue;
        const float pj = expf(logit[j] - m_new);
        l += pj;
        const RowPtrs r = row_ptrs<D>(p, slots[j]);
        float v[kDimsPerThread];
        if (d0 < kNope) {
          const float sc = e8m0_to_float(r.scales[d0 / kKvTile]);
          if constexpr (kDimsPerThread == 4) {
            const uint32_t raw = *reinterpret_cast<const uint32_t*>(r.data + d0);
            const float2 a = e4m3x2_to_float2(uint16_t(raw)), b = e4m3x2_to_float2(uint16_t(raw >> 16));
            v[0] = a.x * sc, v[1] = a.y * sc, v[2] = b.x * sc, v[3] = b.y * sc;
          } else {
            const float2 a = e4m3x2_to_float2(*reinterpret_cast<const uint16_t*>(r.data + d0));
            v[0] = a.x * sc, v[1] = a.y * sc;
          }
        } else {
          const __nv_bfloat162* rope = reinterpret_cast<const __nv_bfloat162*>(r.data + kNope + 2 * (d0 - kNope));
#pragma unroll
          for (int i = 0; i < kDimsPerThread / 2; ++i) {
            const float2 a = __bfloat1622float2(rope[i]);
            v[2 * i] = a.x, v[2 * i + 1] = a.y;
          }
        }
#pragma unroll
        for (int i = 0; i < kDimsPerThread; ++i) acc[i] = fmaf(pj, v[i], acc[i]);
      }
    }
    m = m_new;
    __syncthreads();  // logit/slots are rewritten by the next tile
  }
  if (!value_thread) return;

  __nv_bfloat16* o = p.out + (int64_t(qi) * p.H + h) * D + d0;
  // §4.3 sink: exp(sink − m) joins the denominator only. No valid key: o = 0.
  const float inv = m == -INFINITY ? 0.0f : 1.0f / (l + expf(p.sink[h] - m));
  float ov[kDimsPerThread];
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) ov[i] = __bfloat162float(__float2bfloat16_rn(acc[i] * inv));
  if (d0 >= kNope) {  // §4.4 inverse RoPE on the BF16 output, pairs (2i, 2i+1) of the rope slice
    const float t = float(p.pos[qi]);
#pragma unroll
    for (int i = 0; i < kDimsPerThread; i += 2) {
      const int pair = (d0 - kNope + i) / 2;
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
  DSV4_CHECK_MSG(kv_dim_supported(p.dim), "sparse_attention: dim=", p.dim, " (supported: ", kKvDimNano, ", ", kKvDimV4, ")");
  if (p.n_q == 0) return;
  const dim3 grid(p.H, p.n_q);
  if (p.dim == kKvDimV4)
    sparse_attention_kernel<kKvDimV4><<<grid, kThreads, 0, stream>>>(p);
  else
    sparse_attention_kernel<kKvDimNano><<<grid, kThreads, 0, stream>>>(p);
  DSV4_CUDA_CHECK_LAUNCH();
}

}  // namespace dsv4::cuda
