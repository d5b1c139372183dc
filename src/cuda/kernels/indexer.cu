// Indexer scoring and top-k kernels and their launcher; see indexer.cuh for the contract.
// Scores: one thread per key (its 128 dequantised values in registers), the query's Hi×128 tile
// in shared memory read as warp-wide broadcasts; a query's blocks stride over its visible keys
// 128 at a time, so the grid is sized by the device, not by the cache's largest context.
// Prefill scores: a block takes two queries of one sequence × 64-key tiles (striding like the
// scalar kernel): the tile's keys expanded to BF16 once in shared memory serve both queries' 64
// heads, each warp 16 heads × 64 keys in m16n8k16 BF16 MMAs; ReLU, the head weights and the sum
// over heads follow in registers (a butterfly over the warp's rows), then over the 4 warps of a
// query in shared memory, in a fixed order.
// Selection: one block per query, an exact radix select (8 bits per pass) of the n_sel-th largest
// score, then one ordered pass that keeps every score above it and the lowest-indexed equal ones,
// placed by a block-wide prefix count.
#include "cuda/kernels/indexer.cuh"

#include <algorithm>
#include <cmath>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/hadamard_fp4.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kScoreThreads = 128;  // one key per thread
constexpr int kKeyBytes = kIndexerDim / 2;                   // 64: two E2M1 per byte
constexpr int kKeyScales = kIndexerDim / kMXFP4BlockSize;    // 4 UE8M0 per key
constexpr int kSelectThreads = 1024;
constexpr int kSelectWarps = kSelectThreads / kWarpSize;
constexpr int kRadixBits = 8;
constexpr int kRadixBins = 1 << kRadixBits;
constexpr int kBinsPerLane = kRadixBins / kWarpSize;
static_assert(kSelectWarps == kWarpSize, "warp 0 scans one total per warp");
static_assert(kSelectThreads < (1 << 16), "per-tile counts are packed in 16-bit halves");
static_assert(kKeyBytes == 4 * sizeof(uint4) && kKeyScales == sizeof(uint32_t), "key row = 4×16 B + one word");

// §5.4: entries j < floor((pos+1)/ratio) exist for the query at pos; clamp to the cache size.
__device__ __forceinline__ int visible_keys(const IndexerTopkParams& p, int qi) {
  const int64_t v = (int64_t(p.pos[qi]) + 1) / p.ratio;
  return int(v < 0 ? 0 : (v > p.max_entries ? p.max_entries : v));
}

// Grid (blocks per query, queries): block x of query qi scores keys j0 + threadIdx.x for
// j0 = 128·x, 128·(x + gridDim.x), … below the visible count.
// S_j = Σ_h fma(ReLU(q_h·k_j), w_h·di^−½·Hi^−½) in FP32 (§6 step 5).
__global__ void __launch_bounds__(kScoreThreads) indexer_score_kernel(IndexerTopkParams p, float w_scale) {
  wait_for_prior_grids();
  const int qi = blockIdx.y;
  const int n_vis = visible_keys(p, qi);
  if (int(blockIdx.x) * kScoreThreads >= n_vis) return;  // block-uniform, before the barrier

  __shared__ __align__(16) float q_s[kIndexerMaxHeads * kIndexerDim];
  __shared__ float w_s[kIndexerMaxHeads];
  const auto* qg = reinterpret_cast<const __nv_bfloat162*>(p.q + int64_t(qi) * p.Hi * kIndexerDim);
  for (int i = threadIdx.x; i < p.Hi * kIndexerDim / 2; i += kScoreThreads)
    reinterpret_cast<float2*>(q_s)[i] = __bfloat1622float2(qg[i]);
  for (int h = threadIdx.x; h < p.Hi; h += kScoreThreads) w_s[h] = p.head_weight[int64_t(qi) * p.Hi + h] * w_scale;
  __syncthreads();

  for (int j = blockIdx.x * kScoreThreads + threadIdx.x; j < n_vis; j += gridDim.x * kScoreThreads) {
    // Dequantise key j: element i = e2m1(nibble i) · 2^(scale[i/32] − 127), exact in FP32.
    float k[kIndexerDim];
    const int64_t kr = paged_entry_row(p.pages, p.slot[qi], j, kIndexerKeysPerBlock);
    const uint4* row = reinterpret_cast<const uint4*>(p.key_packed + kr * kKeyBytes);
    const uint32_t scales = *reinterpret_cast<const uint32_t*>(p.key_scale + kr * kKeyScales);
#pragma unroll
    for (int b = 0; b < kKeyScales; ++b) {  // one uint4 = 32 elements = one scale block
      const uint4 w4 = row[b];
      const uint32_t w[4] = {w4.x, w4.y, w4.z, w4.w};
      const float s = e8m0_to_float(uint8_t(scales >> (8 * b)));
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        const float2 v = e2m1x2_to_float2_scaled((w[i / 4] >> (8 * (i % 4))) & 0xffu);
        // ·2^14 first (exact, normal range), then the power-of-two scale (exact down to 2^-128).
        k[32 * b + 2 * i] = v.x * kE2M1AsHalfScale * s;
        k[32 * b + 2 * i + 1] = v.y * kE2M1AsHalfScale * s;
      }
    }
    float score = 0.0f;
    for (int h = 0; h < p.Hi; ++h) {
      const float4* qh = reinterpret_cast<const float4*>(q_s + h * kIndexerDim);
      float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;  // four chains for FMA latency
#pragma unroll
      for (int i = 0; i < kIndexerDim / 4; ++i) {
        const float4 v = qh[i];  // same address in every lane: a broadcast
        a0 = fmaf(v.x, k[4 * i], a0);
        a1 = fmaf(v.y, k[4 * i + 1], a1);
        a2 = fmaf(v.z, k[4 * i + 2], a2);
        a3 = fmaf(v.w, k[4 * i + 3], a3);
      }
      score = fmaf(fmaxf((a0 + a1) + (a2 + a3), 0.0f), w_s[h], score);
    }
    p.score[int64_t(qi) * p.max_entries + j] = score;
  }
}

constexpr int kMmaThreads = 256;     // 8 warps: 2 queries × 4 groups of 16 heads
constexpr int kMmaQueries = 2;
constexpr int kMmaKeys = 64;         // keys per tile: 8 n8 tiles per warp
constexpr int kMmaStride = kIndexerDim + 8;  // BF16 row: +16 bytes, ldmatrix conflict-free
static_assert(kMmaThreads == kMmaQueries * (kIndexerMaxHeads / 16) * kWarpSize, "a warp per (query, 16 heads)");
static_assert(kMmaThreads == kMmaKeys * kKeyScales, "a thread per (key, 32-value scale block) of a tile");

struct MmaSmem {
  alignas(16) __nv_bfloat16 q[kMmaQueries][kIndexerMaxHeads][kMmaStride];
  alignas(16) __nv_bfloat16 k[kMmaKeys][kMmaStride];
  float w[kMmaQueries][kIndexerMaxHeads];            // w_h · di^−½ · Hi^−½, 0 past Hi
  float part[kMmaQueries][kIndexerMaxHeads / 16][kMmaKeys];  // per warp: its 16 heads' sum per key
};

__global__ void __launch_bounds__(kMmaThreads) indexer_score_mma_kernel(IndexerTopkParams p, float w_scale) {
  extern __shared__ __align__(16) uint8_t smem_bytes[];
  MmaSmem& sm = *reinterpret_cast<MmaSmem*>(smem_bytes);
  wait_for_prior_grids();
  const int q0 = blockIdx.y * kMmaQueries;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int g = lane / 4, c = lane % 4;
  const int qw = warp / 4, hw = 16 * (warp % 4);  // the warp's query of the two and first head
  int n_vis[kMmaQueries];
#pragma unroll
  for (int i = 0; i < kMmaQueries; ++i) n_vis[i] = q0 + i < p.n_q ? visible_keys(p, q0 + i) : 0;
  const int n_max = max(n_vis[0], n_vis[1]);
  if (int(blockIdx.x) * kMmaKeys >= n_max) return;  // block-uniform, before any barrier
  if (q0 + 1 < p.n_q && n_vis[0] > 0 && n_vis[1] > 0 && p.slot[q0] != p.slot[q0 + 1]) __trap();  // one sequence
  const int slot = p.slot[n_vis[0] > 0 ? q0 : q0 + 1];

  // Both queries' heads (zeros past Hi and for a query past n_q) and their weights.
  for (int e = threadIdx.x; e < kMmaQueries * kIndexerMaxHeads * (kIndexerDim / 8); e += kMmaThreads) {
    const int qi = e / (kIndexerMaxHeads * (kIndexerDim / 8)), h = e / (kIndexerDim / 8) % kIndexerMaxHeads;
    const int j = e % (kIndexerDim / 8);
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (q0 + qi < p.n_q && h < p.Hi)
      v = *reinterpret_cast<const uint4*>(p.q + (int64_t(q0 + qi) * p.Hi + h) * kIndexerDim + 8 * j);
    *reinterpret_cast<uint4*>(&sm.q[qi][h][8 * j]) = v;
  }
  for (int e = threadIdx.x; e < kMmaQueries * kIndexerMaxHeads; e += kMmaThreads) {
    const int qi = e / kIndexerMaxHeads, h = e % kIndexerMaxHeads;
    sm.w[qi][h] = q0 + qi < p.n_q && h < p.Hi ? p.head_weight[int64_t(q0 + qi) * p.Hi + h] * w_scale : 0.0f;
  }

  for (int j0 = blockIdx.x * kMmaKeys; j0 < n_max; j0 += gridDim.x * kMmaKeys) {
    __syncthreads();  // the previous tile's keys and partial sums are consumed (and q, w are in)
    {  // Key j0 + kk, values 32b … 32b+31: e2m1 · 2^(scale − 127), exact in BF16 (0 past n_max).
      const int kk = threadIdx.x / kKeyScales, b = threadIdx.x % kKeyScales, j = j0 + kk;
      uint32_t out[16] = {};
      if (j < n_max) {
        const int64_t kr = paged_entry_row(p.pages, slot, j, kIndexerKeysPerBlock);
        const uint4 w4 = reinterpret_cast<const uint4*>(p.key_packed + kr * kKeyBytes)[b];
        const uint32_t w[4] = {w4.x, w4.y, w4.z, w4.w};
        const float s = e8m0_to_float(p.key_scale[kr * kKeyScales + b]) * kE2M1AsHalfScale;
#pragma unroll
        for (int i = 0; i < 16; ++i) {
          const float2 v = e2m1x2_to_float2_scaled((w[i / 4] >> (8 * (i % 4))) & 0xffu);
          out[i] = bf16x2_bits(v.x * s, v.y * s);
        }
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
        *reinterpret_cast<uint4*>(&sm.k[kk][32 * b + 8 * i]) = make_uint4(out[4 * i], out[4 * i + 1], out[4 * i + 2], out[4 * i + 3]);
    }
    __syncthreads();

    // Logits of heads hw+g / hw+g+8 of query qw × keys 8n + 2c + {0, 1}.
    float s[kMmaKeys / 8][4] = {};
#pragma unroll
    for (int ks = 0; ks < kIndexerDim / 16; ++ks) {
      uint32_t a[4];
      ldmatrix_x4(a, &sm.q[qw][hw + lane % 16][16 * ks + 8 * (lane / 16)]);
#pragma unroll
      for (int n = 0; n < kMmaKeys / 8; n += 2) {
        uint32_t bk[4];
        ldmatrix_x4(bk, &sm.k[8 * n + lane % 8 + 8 * (lane / 16)][16 * ks + 8 * (lane / 8 % 2)]);
        mma_bf16(s[n], a, bk[0], bk[1]);
        mma_bf16(s[n + 1], a, bk[2], bk[3]);
      }
    }
    // Σ over the warp's 16 heads of ReLU(logit)·w: rows g and g+8 in the lane, then the 8 row
    // groups by a butterfly (every lane ends with the same sums: each add is commutative).
    const float w_lo = sm.w[qw][hw + g], w_hi = sm.w[qw][hw + g + 8];
#pragma unroll
    for (int n = 0; n < kMmaKeys / 8; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float v = fmaf(fmaxf(s[n][2 + e], 0.0f), w_hi, fmaxf(s[n][e], 0.0f) * w_lo);
        v += __shfl_xor_sync(kFullMask, v, 4);
        v += __shfl_xor_sync(kFullMask, v, 8);
        v += __shfl_xor_sync(kFullMask, v, 16);
        if (g == 0) sm.part[qw][warp % 4][8 * n + 2 * c + e] = v;
      }
    __syncthreads();
    if (threadIdx.x < kMmaQueries * kMmaKeys) {
      const int qi = threadIdx.x / kMmaKeys, kk = threadIdx.x % kMmaKeys, j = j0 + kk;
      if (j < (qi == 0 ? n_vis[0] : n_vis[1])) {
        const float score = ((sm.part[qi][0][kk] + sm.part[qi][1][kk]) + sm.part[qi][2][kk]) + sm.part[qi][3][kk];
        p.score[int64_t(q0 + qi) * p.max_entries + j] = score;
      }
    }
  }
}

// Unsigned key whose order is the float order, with −0 ranked as +0 (they compare equal).
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t b = __float_as_uint(f == 0.0f ? 0.0f : f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ uint32_t warp_inclusive_scan(uint32_t v) {
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int o = 1; o < kWarpSize; o *= 2) {
    const uint32_t t = __shfl_up_sync(kFullMask, v, o);
    if (lane >= o) v += t;
  }
  return v;
}

// One block per query (§6 step 6): keep the min(K, visible) largest scores, ties to the lower
// index, in increasing entry order; −1 after them.
__global__ void __launch_bounds__(kSelectThreads) indexer_select_kernel(IndexerTopkParams p) {
  wait_for_prior_grids();
  __shared__ uint32_t hist[kRadixBins];
  __shared__ uint32_t warp_excl[kSelectWarps];
  __shared__ uint32_t s_digit, s_above, s_tile_total;
  const int qi = blockIdx.x, tid = threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int n_vis = visible_keys(p, qi);
  const int n_sel = min(p.K, n_vis);
  const float* score = p.score + int64_t(qi) * p.max_entries;
  int32_t* out = p.topk + int64_t(qi) * p.K;
  for (int i = n_sel + tid; i < p.K; i += kSelectThreads) out[i] = -1;
  if (n_sel == n_vis) {  // every visible entry is kept (§6: the indexer changes nothing yet)
    for (int j = tid; j < n_vis; j += kSelectThreads) out[j] = j;
    return;
  }

  // Radix select from the top digit down: after the pass at `shift`, `prefix` holds the high
  // digits of the threshold key T (the n_sel-th largest) and k_rem how many keys with that
  // prefix are still to take. Each pass counts only keys matching the prefix so far.
  uint32_t prefix = 0, mask = 0, k_rem = uint32_t(n_sel);
  for (int shift = 32 - kRadixBits; shift >= 0; shift -= kRadixBits) {
    for (int i = tid; i < kRadixBins; i += kSelectThreads) hist[i] = 0;
    __syncthreads();
    // Scores cluster in few top-digit bins: one atomic per distinct digit per warp, not per lane
    // (the loop is tile-uniform so every lane reaches the match).
    for (int base = 0; base < n_vis; base += kSelectThreads) {
      const int j = base + tid;
      const uint32_t key = j < n_vis ? order_key(score[j]) : 0u;
      const bool counted = j < n_vis && (key & mask) == prefix;
      const uint32_t digit = counted ? (key >> shift) & (kRadixBins - 1) : uint32_t(kRadixBins);
      const uint32_t peers = __match_any_sync(kFullMask, digit);
      if (counted && lane == __ffs(peers) - 1) atomicAdd(&hist[digit], uint32_t(__popc(peers)));
    }
    __syncthreads();
    if (warp == 0) {
      // Lane l owns bins [8l, 8l+8); a suffix sum over lanes gives the count above each lane's
      // bins; the one lane where the count from the top reaches k_rem walks its bins downwards.
      uint32_t c[kBinsPerLane], lane_sum = 0;
#pragma unroll
      for (int b = 0; b < kBinsPerLane; ++b) lane_sum += c[b] = hist[lane * kBinsPerLane + b];
      uint32_t incl = lane_sum;
#pragma unroll
      for (int o = 1; o < kWarpSize; o *= 2) {
        const uint32_t t = __shfl_down_sync(kFullMask, incl, o);
        if (lane + o < kWarpSize) incl += t;
      }
      uint32_t above = incl - lane_sum;
      if (above < k_rem && k_rem <= incl) {
#pragma unroll
        for (int b = kBinsPerLane - 1; b >= 0; --b) {
          if (above + c[b] >= k_rem) {
            s_digit = uint32_t(lane * kBinsPerLane + b);
            s_above = above;
            break;
          }
          above += c[b];
        }
      }
    }
    __syncthreads();  // s_digit/s_above are next written after the next pass's two barriers
    prefix |= s_digit << shift;
    mask |= uint32_t(kRadixBins - 1) << shift;
    k_rem -= s_above;
  }
  const uint32_t threshold = prefix, need_eq = k_rem;  // take all keys > T and need_eq keys == T

  // Output slot of a kept entry j = (#keys > T before j) + min(#keys == T before j, need_eq):
  // one exclusive block scan per tile of both counts packed as (eq << 16 | gt).
  uint32_t gt_before = 0, eq_before = 0;
  for (int base = 0; base < n_vis; base += kSelectThreads) {
    const int j = base + tid;
    const uint32_t key = j < n_vis ? order_key(score[j]) : 0u;
    const uint32_t gt = j < n_vis && key > threshold, eq = j < n_vis && key == threshold;
    const uint32_t v = (eq << 16) | gt;
    const uint32_t incl = warp_inclusive_scan(v);
    if (lane == kWarpSize - 1) warp_excl[warp] = incl;
    __syncthreads();
    if (warp == 0) {
      const uint32_t t = warp_excl[lane];
      const uint32_t ti = warp_inclusive_scan(t);
      warp_excl[lane] = ti - t;
      if (lane == kWarpSize - 1) s_tile_total = ti;
    }
    __syncthreads();
    const uint32_t excl = warp_excl[warp] + incl - v;
    const uint32_t g = gt_before + (excl & 0xffffu), e = eq_before + (excl >> 16);
    if (gt || (eq && e < need_eq)) out[g + min(e, need_eq)] = j;
    gt_before += s_tile_total & 0xffffu;
    eq_before += s_tile_total >> 16;
    __syncthreads();  // warp_excl and s_tile_total are rewritten by the next tile
  }
}

}  // namespace

void launch_indexer_topk(const IndexerTopkParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.n_q >= 0 && p.n_q <= kMaxGridY);
  if (p.n_q == 0) return;
  DSV4_CHECK(p.q && p.head_weight && p.pos && p.score && p.topk);
  DSV4_CHECK(p.Hi >= 1 && p.Hi <= kIndexerMaxHeads && p.K >= 1 && p.ratio >= 1 && p.max_entries >= 0);
  DSV4_CHECK(p.max_entries == 0 || (p.key_packed && p.key_scale && p.slot && p.pages.pages));
  DSV4_CHECK(reinterpret_cast<uintptr_t>(p.key_packed) % alignof(uint4) == 0 &&
             reinterpret_cast<uintptr_t>(p.key_scale) % alignof(uint32_t) == 0 &&
             reinterpret_cast<uintptr_t>(p.q) % alignof(__nv_bfloat162) == 0);
  // §6 step 4: w_h · di^−½ · Hi^−½, the constant rounded once to FP32 as in src/cpu/indexer.cpp.
  const float w_scale = float(1.0 / std::sqrt(double(kIndexerDim)) / std::sqrt(double(p.Hi)));
  if (p.max_entries > 0) {
    // Blocks per query: as many as the key tiles of the longest context the cache allows, but no
    // more than two waves of the device for the launch's queries. A grid of every tile at that
    // context (2,048 blocks per query at 1M tokens) is mostly blocks that find no visible key and
    // leave: with 3 blocks resident per SM (168 registers) they cost a wave each, more than the
    // scoring at a few thousand tokens of context.
    if (p.prefill) {
      static ResidentGrid record;
      const void* kernel = reinterpret_cast<const void*>(indexer_score_mma_kernel);
      const int resident = resident_blocks(record, kernel, kMmaThreads, sizeof(MmaSmem));
      const int pairs = (p.n_q + kMmaQueries - 1) / kMmaQueries;
      DSV4_CHECK_MSG(pairs <= kMaxGridY, "indexer: ", p.n_q, " prefill queries in one launch");
      const int tiles = (p.max_entries + kMmaKeys - 1) / kMmaKeys;
      const int per_pair = std::max(1, std::min(tiles, (2 * resident + pairs - 1) / pairs));
      launch_kernel(indexer_score_mma_kernel, dim3(per_pair, pairs), kMmaThreads, sizeof(MmaSmem), stream, p, w_scale);
    } else {
      static ResidentGrid record;
      const int resident = resident_blocks(record, reinterpret_cast<const void*>(indexer_score_kernel), kScoreThreads, 0);
      const int tiles = (p.max_entries + kScoreThreads - 1) / kScoreThreads;
      const int per_query = std::max(1, std::min(tiles, (2 * resident + p.n_q - 1) / p.n_q));
      launch_kernel(indexer_score_kernel, dim3(per_query, p.n_q), kScoreThreads, 0, stream, p, w_scale);
    }
  }
  launch_kernel(indexer_select_kernel, p.n_q, kSelectThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
