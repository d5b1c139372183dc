// Sparse attention kernel and launcher; see sparse_attention.cuh for the contract.
// Split-key ("flash-decoding") kernel, templated on the head dim D. A cluster of kSplit blocks
// serves one (query, group of kHeads heads): block r takes the list positions r, r+kSplit, … (so
// a masked tail or masked entries spread evenly over the blocks), compacts its valid slots, and
// streams them in tiles of kTileKeys rows staged in shared memory with cp.async (every row read
// once per head group, all of a tile's loads in flight at once). Per tile: logits of the group's
// heads (K = V: one dequantised row serves every head), an online-softmax update, and Σ p·v.
// The blocks' partial (max, sum, o) meet through distributed shared memory after a cluster
// barrier; each block combines a slice of the outputs in block order (deterministic, no atomics,
// no workspace), adds the sink to the denominator once (§4.3) and applies the inverse RoPE (§4.4).
#include "cuda/kernels/sparse_attention.cuh"

#include <cooperative_groups.h>
#include <cuda_pipeline.h>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/kv_cache.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kSplit = 8;       // blocks per cluster = key slices per (query, head group); portable cluster size
constexpr int kHeads = 4;       // heads per block: 64 heads × 1 query → 16 clusters = 128 blocks
constexpr int kTileKeys = 64;   // rows staged per tile
constexpr int kValueDims = 4;   // value phase: a thread owns 4 consecutive dims of all kHeads heads

template <int D>
struct Shape {
  static constexpr int kNope = kv_nope(D);
  static constexpr int kRowBytes = kv_row_data_bytes(D);           // 576 / 192
  static constexpr int kScaleBytes = kv_row_scale_bytes(D);        // 8 / 2
  static constexpr int kRowChunks = kRowBytes / 16;                // cp.async pieces per row
  static constexpr int kDimsPerLane = D / kWarpSize;               // logit phase: 16 / 4
  static constexpr int kNopeLanes = kNope / kDimsPerLane;          // 28 / 16
  static constexpr int kChunks = D / kValueDims;                   // value phase: 128 / 32 dim chunks
  static constexpr int kGroups = kThreads / kChunks;               // 2 / 8 key groups
  static constexpr int kPairsPerBlock = kHeads * D / 2 / kSplit;   // combine: 128 / 32 output pairs
  static_assert(kRowBytes % 16 == 0, "rows are copied in 16-byte pieces");
  static_assert(kDimsPerLane % 4 == 0, "a lane loads whole E4M3 words");
  static_assert(kNope % kDimsPerLane == 0 && kKvTile % kDimsPerLane == 0, "a lane's dims share one scale");
  static_assert(kNope % kValueDims == 0 && kKvTile % kValueDims == 0, "a value chunk's dims share one scale");
  static_assert(kThreads % kChunks == 0, "whole key groups");
  static_assert(kPairsPerBlock <= kThreads && (kHeads * D / 2) % kSplit == 0, "one output pair per combine thread");
};
static_assert(kHeads == 4, "reduce_heads and the float4 p rows assume 4 heads per block");
static_assert(kHeads <= kWarps && kTileKeys % kWarpSize == 0, "softmax: one warp per head, whole lanes per tile");

template <int D>
struct Smem {
  using S = Shape<D>;
  union {
    uint8_t rows[kTileKeys * S::kRowBytes];  // the tile's cache rows, byte for byte
    struct {
      float part[S::kGroups][kHeads * D];    // per key group partial Σ p·v, [head][dim]
      float o[kHeads * D];                   // the block's Σ p·v (relative to its max), read by the cluster
    } out;
  };
  uint8_t scale[kTileKeys * S::kScaleBytes];
  float4 p[kTileKeys];     // [key] logits of the 4 heads, then their exp(ℓ − m)
  int32_t list[kThreads];  // compacted valid slots of one chunk of this block's positions
  int warp_count[kWarps];
  float alpha[kHeads], m[kHeads], l[kHeads];
};

// Slot s: page s / block_size, offset s % block_size; data bytes first, then the scale bytes
// (kv_cache.cuh). page_bytes = kv_page_bytes(block_size, D), computed once per block (a 64-bit divide).
template <int D>
__device__ __forceinline__ const uint8_t* row_data(const SparseAttnParams& p, int64_t page_bytes, int slot) {
  const int page = slot / p.block_size, off = slot % p.block_size;
  return p.cache + page * page_bytes + off * kv_row_data_bytes(D);
}
template <int D>
__device__ __forceinline__ const uint8_t* row_scales(const SparseAttnParams& p, int64_t page_bytes, int slot) {
  const int page = slot / p.block_size, off = slot % p.block_size;
  return p.cache + page * page_bytes + int64_t(p.block_size) * kv_row_data_bytes(D) + off * kv_row_scale_bytes(D);
}

// N 32-bit words from 4N-byte aligned shared memory, in vector loads.
template <int N>
__device__ __forceinline__ void load_words(const uint8_t* src, uint32_t (&w)[N]) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      const uint4 v = reinterpret_cast<const uint4*>(src)[i / 4];
      w[i] = v.x, w[i + 1] = v.y, w[i + 2] = v.z, w[i + 3] = v.w;
    }
  } else if constexpr (N == 2) {
    const uint2 v = *reinterpret_cast<const uint2*>(src);
    w[0] = v.x, w[1] = v.y;
  } else {
    static_assert(N == 1, "1, 2 or a multiple of 4 words");
    w[0] = *reinterpret_cast<const uint32_t*>(src);
  }
}
// Two BF16 (low half = first element) -> floats, exactly.
__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// Sum each of the 4 per-lane values over the warp (reduce-scatter, 6 shuffles instead of 20).
// Returns the total of value (lane >> 3) & 3 in every lane.
__device__ __forceinline__ float reduce_heads(const float (&v)[kHeads], int lane) {
  const bool hi16 = lane & 16, hi8 = lane & 8;
  // xor 16: lanes < 16 keep values 0, 1 and send 2, 3; lanes >= 16 the other way round.
  const float s0 = hi16 ? v[0] : v[2], s1 = hi16 ? v[1] : v[3];
  const float k0 = hi16 ? v[2] : v[0], k1 = hi16 ? v[3] : v[1];
  const float a0 = k0 + __shfl_xor_sync(kFullMask, s0, 16), a1 = k1 + __shfl_xor_sync(kFullMask, s1, 16);
  // xor 8: keep value 2·hi16 + hi8.
  float x = (hi8 ? a1 : a0) + __shfl_xor_sync(kFullMask, hi8 ? a0 : a1, 8);
  x += __shfl_xor_sync(kFullMask, x, 4);
  x += __shfl_xor_sync(kFullMask, x, 2);
  x += __shfl_xor_sync(kFullMask, x, 1);
  return x;
}

template <int D>
__global__ void __cluster_dims__(kSplit, 1, 1) __launch_bounds__(kThreads, 2) sparse_attention_kernel(SparseAttnParams p) {
  wait_for_prior_grids();
  using S = Shape<D>;
  constexpr int kNope = S::kNope, kRowBytes = S::kRowBytes, kScaleBytes = S::kScaleBytes, kDL = S::kDimsPerLane;
  __shared__ __align__(16) Smem<D> sm;
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = int(cluster.block_rank());
  const int qi = blockIdx.y, group = blockIdx.x / kSplit;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int32_t* idx = p.indices + int64_t(qi) * p.n_idx;
  const int64_t page_bytes = kv_page_bytes(p.block_size, D);

  // This lane's query dims of the group's heads, pre-multiplied by the softmax scale. Heads past
  // H (H not a multiple of kHeads) score zeros and are never written.
  float qv[kHeads][kDL];
#pragma unroll
  for (int h = 0; h < kHeads; ++h) {
    const int hg = group * kHeads + h;
    const __nv_bfloat16* q = p.q + (int64_t(qi) * p.H + hg) * D + lane * kDL;
#pragma unroll
    for (int j = 0; j < kDL; ++j) qv[h][j] = hg < p.H ? __bfloat162float(q[j]) * p.softmax_scale : 0.0f;
  }

  // Value-phase ownership: dims d0 … d0+3 of every head, keys g, g + kGroups, … of each tile.
  const int d0 = (threadIdx.x % S::kChunks) * kValueDims, g = threadIdx.x / S::kChunks;
  float acc[kHeads][kValueDims] = {};
  float m_run = -INFINITY, l_run = 0.0f;  // softmax state of head `warp`, held by warps 0 … kHeads−1

  const int n_mine = p.n_idx > rank ? (p.n_idx - rank + kSplit - 1) / kSplit : 0;  // positions rank + kSplit·i
  for (int c0 = 0; c0 < n_mine; c0 += kThreads) {
    // Compact this chunk's valid slots into sm.list, in list order.
    const int i = c0 + threadIdx.x;
    const int32_t slot = i < n_mine ? idx[rank + kSplit * i] : -1;
    const unsigned ballot = __ballot_sync(kFullMask, slot >= 0);
    if (lane == 0) sm.warp_count[warp] = __popc(ballot);
    __syncthreads();
    int base = 0, total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      base += w < warp ? sm.warp_count[w] : 0;
      total += sm.warp_count[w];
    }
    if (slot >= 0) sm.list[base + __popc(ballot & ((1u << lane) - 1u))] = slot;
    __syncthreads();

    for (int t0 = 0; t0 < total; t0 += kTileKeys) {
      const int n = min(kTileKeys, total - t0);
      // Stage the n rows (all pieces in flight together) and their scale bytes.
      for (int e = threadIdx.x; e < n * S::kRowChunks; e += kThreads) {
        const int k = e / S::kRowChunks, j = e % S::kRowChunks;
        __pipeline_memcpy_async(sm.rows + k * kRowBytes + 16 * j,
                                row_data<D>(p, page_bytes, sm.list[t0 + k]) + 16 * j, 16);
      }
      __pipeline_commit();
      for (int e = threadIdx.x; e < n * kScaleBytes; e += kThreads) {
        const int k = e / kScaleBytes;
        sm.scale[e] = row_scales<D>(p, page_bytes, sm.list[t0 + k])[e % kScaleBytes];
      }
      __pipeline_wait_prior(0);
      __syncthreads();

      // Logits: warp per key; lane `lane` dots its kDL dims with every head (E4M3 NoPE lanes times
      // their 1×64 tile scale, BF16 RoPE lanes), then one reduce-scatter over the 4 heads.
      for (int k = warp; k < n; k += kWarps) {
        const uint8_t* row = sm.rows + k * kRowBytes;
        float part[kHeads] = {};
        if (lane < S::kNopeLanes) {
          uint32_t w[kDL / 4];
          load_words(row + lane * kDL, w);
#pragma unroll
          for (int i4 = 0; i4 < kDL / 4; ++i4) {
            const float2 a = e4m3x2_to_float2(uint16_t(w[i4])), b = e4m3x2_to_float2(uint16_t(w[i4] >> 16));
#pragma unroll
            for (int h = 0; h < kHeads; ++h) {
              part[h] = fmaf(qv[h][4 * i4], a.x, part[h]);
              part[h] = fmaf(qv[h][4 * i4 + 1], a.y, part[h]);
              part[h] = fmaf(qv[h][4 * i4 + 2], b.x, part[h]);
              part[h] = fmaf(qv[h][4 * i4 + 3], b.y, part[h]);
            }
          }
          const float sc = e8m0_to_float(sm.scale[k * kScaleBytes + lane * kDL / kKvTile]);
#pragma unroll
          for (int h = 0; h < kHeads; ++h) part[h] *= sc;
        } else {
          uint32_t w[kDL / 2];
          load_words(row + kNope + (lane - S::kNopeLanes) * 2 * kDL, w);
#pragma unroll
          for (int i2 = 0; i2 < kDL / 2; ++i2) {
            const float x0 = bf16_lo(w[i2]), x1 = bf16_hi(w[i2]);
#pragma unroll
            for (int h = 0; h < kHeads; ++h) {
              part[h] = fmaf(qv[h][2 * i2], x0, part[h]);
              part[h] = fmaf(qv[h][2 * i2 + 1], x1, part[h]);
            }
          }
        }
        const float s = reduce_heads(part, lane);
        if ((lane & 7) == 0) reinterpret_cast<float*>(&sm.p[k])[lane >> 3] = s;
      }
      __syncthreads();

      // Online softmax, warp h for head h: new max, p = exp(ℓ − m) in place, rescale factor.
      if (warp < kHeads) {
        float lg[kTileKeys / kWarpSize];
        float m_tile = -INFINITY;
#pragma unroll
        for (int j = 0; j < kTileKeys / kWarpSize; ++j) {
          const int k = lane + j * kWarpSize;
          lg[j] = k < n ? reinterpret_cast<const float*>(&sm.p[k])[warp] : -INFINITY;
          m_tile = fmaxf(m_tile, lg[j]);
        }
        const float m_new = fmaxf(m_run, warp_max(m_tile));
        float ps = 0.0f;
#pragma unroll
        for (int j = 0; j < kTileKeys / kWarpSize; ++j) {
          const int k = lane + j * kWarpSize;
          if (k < n) {
            const float e = expf(lg[j] - m_new);
            reinterpret_cast<float*>(&sm.p[k])[warp] = e;
            ps += e;
          }
        }
        const float alpha = expf(m_run - m_new);  // m_run = −inf before the first tile: alpha = 0
        l_run = l_run * alpha + warp_sum(ps);
        m_run = m_new;
        if (lane == 0) sm.alpha[warp] = alpha;
      }
      __syncthreads();

      // Σ p·v: rescale, then this thread's keys of the tile.
      float alpha[kHeads];
#pragma unroll
      for (int h = 0; h < kHeads; ++h) {
        alpha[h] = sm.alpha[h];
#pragma unroll
        for (int i4 = 0; i4 < kValueDims; ++i4) acc[h][i4] *= alpha[h];
      }
      for (int k = g; k < n; k += S::kGroups) {
        const float4 pk = sm.p[k];
        const float ph[kHeads] = {pk.x, pk.y, pk.z, pk.w};
        const uint8_t* row = sm.rows + k * kRowBytes;
        float v[kValueDims];
        if (d0 < kNope) {
          const float sc = e8m0_to_float(sm.scale[k * kScaleBytes + d0 / kKvTile]);
          const uint32_t w = *reinterpret_cast<const uint32_t*>(row + d0);
          const float2 a = e4m3x2_to_float2(uint16_t(w)), b = e4m3x2_to_float2(uint16_t(w >> 16));
          v[0] = a.x * sc, v[1] = a.y * sc, v[2] = b.x * sc, v[3] = b.y * sc;
        } else {
          const uint2 w = *reinterpret_cast<const uint2*>(row + kNope + 2 * (d0 - kNope));
          v[0] = bf16_lo(w.x), v[1] = bf16_hi(w.x), v[2] = bf16_lo(w.y), v[3] = bf16_hi(w.y);
        }
#pragma unroll
        for (int h = 0; h < kHeads; ++h)
#pragma unroll
          for (int i4 = 0; i4 < kValueDims; ++i4) acc[h][i4] = fmaf(ph[h], v[i4], acc[h][i4]);
      }
      __syncthreads();  // rows, scales and p are rewritten by the next tile
    }
  }

  // The block's partial: key groups summed in group order, then published to the cluster.
  // (sm.out aliases sm.rows; the last tile ended with a barrier.)
#pragma unroll
  for (int h = 0; h < kHeads; ++h)
#pragma unroll
    for (int i4 = 0; i4 < kValueDims; ++i4) sm.out.part[g][h * D + d0 + i4] = acc[h][i4];
  if (warp < kHeads && lane == 0) sm.m[warp] = m_run, sm.l[warp] = l_run;
  __syncthreads();
  for (int e = threadIdx.x; e < kHeads * D; e += kThreads) {
    float s = sm.out.part[0][e];
#pragma unroll
    for (int gg = 1; gg < S::kGroups; ++gg) s += sm.out.part[gg][e];
    sm.out.o[e] = s;
  }
  cluster.sync();  // every block's o, m, l visible to the cluster

  // Combine: block `rank` finishes output pairs rank·kPairsPerBlock …, over blocks 0 … kSplit−1
  // in order. o = Σ_b e^(m_b − M)·o_b / (Σ_b e^(m_b − M)·l_b + e^(sink − M)) (§4.3).
  if (threadIdx.x < S::kPairsPerBlock) {
    const int gp = rank * S::kPairsPerBlock + threadIdx.x;
    const int h = gp / (D / 2), d = 2 * (gp % (D / 2));
    const int hg = group * kHeads + h;
    if (hg < p.H) {
      float M = -INFINITY;
#pragma unroll
      for (int b = 0; b < kSplit; ++b) M = fmaxf(M, cluster.map_shared_rank(&sm.m[0], b)[h]);
      float o0 = 0.0f, o1 = 0.0f;  // no valid key in the whole list: o = 0
      if (M != -INFINITY) {
        float den = 0.0f;
#pragma unroll
        for (int b = 0; b < kSplit; ++b) {
          const float mb = cluster.map_shared_rank(&sm.m[0], b)[h];
          if (mb == -INFINITY) continue;  // a block without valid keys
          const float wb = expf(mb - M);
          den = fmaf(wb, cluster.map_shared_rank(&sm.l[0], b)[h], den);
          const float2 ob = *reinterpret_cast<const float2*>(cluster.map_shared_rank(&sm.out.o[0], b) + h * D + d);
          o0 = fmaf(wb, ob.x, o0);
          o1 = fmaf(wb, ob.y, o1);
        }
        const float inv = 1.0f / (den + expf(p.sink[hg] - M));  // §4.3: the sink joins the denominator only
        o0 *= inv;
        o1 *= inv;
      }
      o0 = __bfloat162float(__float2bfloat16_rn(o0));
      o1 = __bfloat162float(__float2bfloat16_rn(o1));
      if (d >= kNope) {  // §4.4 inverse RoPE on the BF16 output, pair (d, d+1) of the rope slice
        float sn, cs;
        sincosf(float(p.pos[qi]) * p.inv_freq[(d - kNope) / 2], &sn, &cs);
        const float x0 = o0, x1 = o1;
        o0 = x0 * cs + x1 * sn;  // conjugate rotation: sin negated
        o1 = x1 * cs - x0 * sn;
      }
      *reinterpret_cast<__nv_bfloat162*>(p.out + (int64_t(qi) * p.H + hg) * D + d) = __floats2bfloat162_rn(o0, o1);
    }
  }
  cluster.sync();  // peers may still read this block's shared memory
}

}  // namespace

void launch_sparse_attention(const SparseAttnParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.q && p.cache && p.indices && p.sink && p.pos && p.inv_freq && p.out);
  DSV4_CHECK_MSG(p.n_q >= 0 && p.n_q <= kMaxGridY && p.H >= 1 && p.H <= (1 << 20) && p.n_idx >= 0 && p.block_size > 0,
                 "n_q=", p.n_q, " H=", p.H, " n_idx=", p.n_idx);
  DSV4_CHECK_MSG(kv_dim_supported(p.dim), "sparse_attention: dim=", p.dim, " (supported: ", kKvDimNano, ", ", kKvDimV4, ")");
  if (p.n_q == 0) return;
  const dim3 grid((p.H + kHeads - 1) / kHeads * kSplit, p.n_q);  // x: whole clusters
  if (p.dim == kKvDimV4)
    launch_kernel(sparse_attention_kernel<kKvDimV4>, grid, kThreads, 0, stream, p);
  else
    launch_kernel(sparse_attention_kernel<kKvDimNano>, grid, kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
