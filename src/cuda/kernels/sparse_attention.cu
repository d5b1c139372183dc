// Sparse attention kernel and launcher; see sparse_attention.cuh for the contract.
// Split-key ("flash-decoding") tensor-core kernel, templated on the head dim D. A cluster of
// kSplit blocks serves one (query, group of 16 heads): block r takes the list positions r,
// r+kSplit, … (so masked entries spread evenly over the blocks), compacts its valid slots and
// streams them in tiles of 32 rows. The 16 heads share every K = V row (one query, MQA-shaped),
// which is what makes tensor cores pay: per tile the block
//   1. converts the staged E4M3 rows to BF16 once, with the 1×64 tile scale folded in (exact: the
//      scale is a power of two and E4M3 has 4 significant bits),
//   2. S = Q·Kᵀ [16 heads × 32 keys] with m16n8k16 BF16 MMAs, each warp over its quarter of the
//      dims, the four partial sums added in warp order,
//   3. an FP32 online-softmax update; p = exp(ℓ − m) is split into three BF16 terms hi + mid + lo
//      (|p − hi − mid − lo| ≤ 2^-24·p: FP32 accuracy, §12 "FP32 accumulation/online softmax"; with
//      two terms, 2^-16·p, nano's top-1 disagreements with the FP32 CPU reference went up by half:
//      bench/results/2026-12-04-h200-tc-sparse-attention.md),
//   4. O += P·V with the same MMAs, each warp owning its quarter of the output dims.
// A warp reads and writes only its own quarter of the BF16 tile, so steps 1, 2 and 4 need no
// barrier between warps; the next tile's cache rows load (cp.async) during steps 3 and 4.
// The blocks' partial (max, sum, o) meet through distributed shared memory after a cluster
// barrier; each block combines a slice of the outputs in block order (deterministic, no atomics,
// no workspace), adds the sink to the denominator once (§4.3) and applies the inverse RoPE (§4.4).
#include "cuda/kernels/sparse_attention.cuh"

#include <cooperative_groups.h>
#include <cuda_pipeline.h>

#include <atomic>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/kv_cache.cuh"
#include "cuda/kernels/kv_rows.cuh"
#include "cuda/kernels/launch.cuh"
#include "cuda/kernels/sparse_attention_prefill.cuh"

namespace dsv4::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kSplit = 8;       // blocks per cluster = key slices per (query, head group); portable cluster size
constexpr int kHeads = 16;      // heads per block: the MMA's m. 64 heads × 1 query → 4 clusters = 32 blocks
constexpr int kTileKeys = 32;   // rows per tile: two k16 steps of P·V
constexpr int kBlocksPerSm = 2;  // D = 512 needs ~200 registers; at 3 blocks per SM (170) it spills
constexpr int kHeadsPerBlock = kHeads / kSplit;  // heads whose outputs one block of the cluster combines
static_assert(kHeads % kSplit == 0 && kHeadsPerBlock * kSplit <= kThreads, "whole heads per combining block");

template <int D>
struct Shape {
  static constexpr int kNope = kv_nope(D);
  static constexpr int kRowBytes = kv_row_data_bytes(D);     // 576 / 192
  static constexpr int kScaleBytes = kv_row_scale_bytes(D);  // 8 / 2
  static constexpr int kRowChunks = kRowBytes / 16;          // cp.async pieces per row
  static constexpr int kWarpDims = D / kWarps;               // a warp's quarter: 128 / 32 dims
  static constexpr int kKSteps = kWarpDims / 16;             // its k16 steps of Q·Kᵀ
  static constexpr int kNTiles = kWarpDims / 8;              // its n8 tiles of P·V
  static constexpr int kLanesPerRow = kWarpDims / 4;         // conversion: a lane converts 4 dims
  static constexpr int kRowsPerPass = kWarpSize / kLanesPerRow;
  static constexpr int kStride = D + 8;                      // BF16 tile row: +16 bytes, ldmatrix conflict-free
  static constexpr int kPairsPerBlock = kHeads * D / 2 / kSplit;  // combine: 512 / 128 output pairs
  static_assert(kRowBytes % 16 == 0, "rows are copied in 16-byte pieces");
  static_assert(kKSteps >= 1 && kNTiles % 2 == 0, "whole k16 steps and n8 tile pairs per warp");
  static_assert(kWarpSize % kLanesPerRow == 0 && kTileKeys % kRowsPerPass == 0, "whole rows per conversion pass");
  static_assert((kHeads * D / 2) % kSplit == 0, "whole output pairs per block");
};
static_assert(kThreads == kHeads * 8, "softmax: 8 threads per head, 4 keys each");
static_assert(kTileKeys == 32, "softmax and P·V assume 32-key tiles");

template <int D>
struct Smem {
  using S = Shape<D>;
  union {
    alignas(16) __nv_bfloat16 kv[kTileKeys][S::kStride];  // the tile's rows as BF16, tile scales applied
    alignas(16) float o[kHeads][D];                        // at the end: the block's Σ p·v, read by the cluster
  };
  alignas(16) uint8_t raw[kTileKeys][S::kRowBytes];  // staged cache rows, byte for byte
  alignas(16) uint8_t scale[kTileKeys][S::kScaleBytes];
  alignas(16) float s_part[kWarps][kHeads][kTileKeys];  // each warp's partial Q·Kᵀ over its dims
  alignas(16) __nv_bfloat16 p_terms[3][kHeads][kTileKeys + 8];  // P as hi, mid, lo; +16 B: conflict-free
  int32_t list[kThreads];  // compacted valid slots of one chunk of this block's positions
  int warp_count[kWarps];
  float alpha[kHeads], m[kHeads], l[kHeads];
  // The combine's per-(head of this block, rank) weights e^(m_b − M) (0 for a rank without valid
  // keys), the heads' 1 / (Σ_b e^(m_b − M)·l_b + e^(sink − M)), and whether any key was valid.
  float comb_w[kHeadsPerBlock][kSplit], comb_inv[kHeadsPerBlock];
  bool comb_valid[kHeadsPerBlock][kSplit], comb_any[kHeadsPerBlock];
};

template <int D>
__global__ void __cluster_dims__(kSplit, 1, 1) __launch_bounds__(kThreads, kBlocksPerSm)
    sparse_attention_kernel(SparseAttnParams p) {
  using S = Shape<D>;
  extern __shared__ __align__(16) uint8_t smem_bytes[];
  Smem<D>& sm = *reinterpret_cast<Smem<D>*>(smem_bytes);
  wait_for_prior_grids();
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = int(cluster.block_rank());
  const int qi = blockIdx.y, h0 = blockIdx.x / kSplit * kHeads;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int g = lane / 4, c = lane % 4;  // MMA fragment row group and column pair
  const int wd0 = warp * S::kWarpDims;   // first dim of this warp's quarter
  const int32_t* idx = p.indices + int64_t(qi) * p.n_idx;
  const int64_t page_bytes = kv_page_bytes(p.block_size, D);

  // Q as MMA A fragments over this warp's dims: rows = heads h0+g and h0+g+8 (zero past H: they
  // score zeros and are never written), held in registers for the whole list.
  uint32_t qf[S::kKSteps][4];
  {
    const __nv_bfloat16* q_lo = p.q + (int64_t(qi) * p.H + h0 + g) * D;
    const __nv_bfloat16* q_hi = q_lo + 8 * D;
    const bool lo_ok = h0 + g < p.H, hi_ok = h0 + g + 8 < p.H;
#pragma unroll
    for (int ks = 0; ks < S::kKSteps; ++ks) {
      const int d = wd0 + 16 * ks + 2 * c;
      qf[ks][0] = lo_ok ? *reinterpret_cast<const uint32_t*>(q_lo + d) : 0u;
      qf[ks][1] = hi_ok ? *reinterpret_cast<const uint32_t*>(q_hi + d) : 0u;
      qf[ks][2] = lo_ok ? *reinterpret_cast<const uint32_t*>(q_lo + d + 8) : 0u;
      qf[ks][3] = hi_ok ? *reinterpret_cast<const uint32_t*>(q_hi + d + 8) : 0u;
    }
  }

  float acc[S::kNTiles][4] = {};  // O of heads g / g+8 (regs 0-1 / 2-3), this warp's dims
  // Softmax state of head threadIdx.x / 8, held alike by its 8 threads.
  const int sh = threadIdx.x / 8, sk = threadIdx.x % 8 * 4;
  float m_run = -INFINITY, l_run = 0.0f;

  // Stage rows t0 … t0+n−1 of the compacted list (all pieces in flight together).
  const auto stage = [&](int t0, int n) {
    for (int e = threadIdx.x; e < n * S::kRowChunks; e += kThreads) {
      const int k = e / S::kRowChunks, j = e % S::kRowChunks;
      __pipeline_memcpy_async(&sm.raw[k][16 * j], kv_row_data<D>(p.cache, p.block_size, page_bytes, sm.list[t0 + k]) + 16 * j, 16);
    }
    if constexpr (S::kScaleBytes % 8 == 0) {
      for (int k = threadIdx.x; k < n; k += kThreads)
        __pipeline_memcpy_async(&sm.scale[k][0], kv_row_scales<D>(p.cache, p.block_size, page_bytes, sm.list[t0 + k]),
                                  S::kScaleBytes);
    } else {  // 2-byte scale groups are below cp.async's smallest piece
      for (int e = threadIdx.x; e < n * S::kScaleBytes; e += kThreads)
        sm.scale[e / S::kScaleBytes][e % S::kScaleBytes] =
            kv_row_scales<D>(p.cache, p.block_size, page_bytes, sm.list[t0 + e / S::kScaleBytes])[e % S::kScaleBytes];
    }
    __pipeline_commit();
  };

  const int n_list = p.count ? min(max(p.count[qi], 0), p.n_idx) : p.n_idx;  // entries past it are masked
  const int n_mine = n_list > rank ? (n_list - rank + kSplit - 1) / kSplit : 0;  // positions rank + kSplit·i
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
    if (total > 0) stage(0, min(kTileKeys, total));

    for (int t0 = 0; t0 < total; t0 += kTileKeys) {
      const int n = min(kTileKeys, total - t0);
      __pipeline_wait_prior(0);
      __syncthreads();  // the tile's rows and scales are in

      // 1. This warp's dims of every row → BF16 (rows past n → 0: P is 0 there, V must be finite).
      {
        const int d = wd0 + lane % S::kLanesPerRow * 4;
#pragma unroll 4
        for (int k = lane / S::kLanesPerRow; k < kTileKeys; k += S::kRowsPerPass) {
          const uint2 out = k < n ? kv_dims_bf16<D>(sm.raw[k], sm.scale[k], d) : make_uint2(0u, 0u);
          *reinterpret_cast<uint2*>(&sm.kv[k][d]) = out;
        }
      }
      __syncwarp();

      // 2. Partial logits over this warp's dims: n8 tiles of keys, k16 steps of dims.
      {
        float s[kTileKeys / 8][4] = {};
#pragma unroll
        for (int ks = 0; ks < S::kKSteps; ++ks)
#pragma unroll
          for (int j = 0; j < kTileKeys / 8; j += 2) {
            uint32_t b[4];  // keys 8j … 8j+15 × dims of step ks
            ldmatrix_x4(b, &sm.kv[8 * j + lane % 8 + 8 * (lane / 16)][wd0 + 16 * ks + 8 * (lane / 8 % 2)]);
            mma_bf16(s[j], qf[ks], b[0], b[1]);
            mma_bf16(s[j + 1], qf[ks], b[2], b[3]);
          }
#pragma unroll
        for (int j = 0; j < kTileKeys / 8; ++j) {
          *reinterpret_cast<float2*>(&sm.s_part[warp][g][8 * j + 2 * c]) = make_float2(s[j][0], s[j][1]);
          *reinterpret_cast<float2*>(&sm.s_part[warp][g + 8][8 * j + 2 * c]) = make_float2(s[j][2], s[j][3]);
        }
      }
      __syncthreads();  // partials complete; every warp is done with the staged rows
      if (t0 + kTileKeys < total) stage(t0 + kTileKeys, min(kTileKeys, total - t0 - kTileKeys));

      // 3. Online softmax: thread (head sh, keys sk … sk+3); the 8 threads of a head reduce by shuffles.
      {
        float4 sum = *reinterpret_cast<const float4*>(&sm.s_part[0][sh][sk]);
#pragma unroll
        for (int w = 1; w < kWarps; ++w) {
          const float4 v = *reinterpret_cast<const float4*>(&sm.s_part[w][sh][sk]);
          sum.x += v.x, sum.y += v.y, sum.z += v.z, sum.w += v.w;
        }
        const float lg[4] = {sk < n ? sum.x * p.softmax_scale : -INFINITY, sk + 1 < n ? sum.y * p.softmax_scale : -INFINITY,
                             sk + 2 < n ? sum.z * p.softmax_scale : -INFINITY, sk + 3 < n ? sum.w * p.softmax_scale : -INFINITY};
        float m_grp = fmaxf(fmaxf(lg[0], lg[1]), fmaxf(lg[2], lg[3]));
#pragma unroll
        for (int o = 1; o < 8; o *= 2) m_grp = fmaxf(m_grp, __shfl_xor_sync(kFullMask, m_grp, o));
        const float m_new = fmaxf(m_run, m_grp);  // finite: key sk = 0 of the tile is valid
        float e[4], ps = 0.0f;
#pragma unroll
        for (int j = 0; j < 4; ++j) ps += (e[j] = sk + j < n ? expf(lg[j] - m_new) : 0.0f);
#pragma unroll
        for (int o = 1; o < 8; o *= 2) ps += __shfl_xor_sync(kFullMask, ps, o);
        const float alpha = expf(m_run - m_new);  // m_run = −inf before the first tile: alpha = 0
        l_run = l_run * alpha + ps;
        m_run = m_new;
        // Each remainder r − bf16(r) is exact in FP32 (r and its rounding share the top bits).
#pragma unroll
        for (int t = 0; t < 3; ++t) {
          *reinterpret_cast<uint2*>(&sm.p_terms[t][sh][sk]) =
              make_uint2(bf16x2_bits(e[0], e[1]), bf16x2_bits(e[2], e[3]));
#pragma unroll
          for (int j = 0; j < 4; ++j) e[j] -= __bfloat162float(__float2bfloat16_rn(e[j]));
        }
        if (sk == 0) sm.alpha[sh] = alpha;
      }
      __syncthreads();

      // 4. O = alpha·O + (P_hi + P_mid + P_lo)·V over this warp's dims.
      {
        const float a_g = sm.alpha[g], a_g8 = sm.alpha[g + 8];
#pragma unroll
        for (int j = 0; j < S::kNTiles; ++j) acc[j][0] *= a_g, acc[j][1] *= a_g, acc[j][2] *= a_g8, acc[j][3] *= a_g8;
#pragma unroll
        for (int ks = 0; ks < kTileKeys / 16; ++ks) {
          uint32_t pf[3][4];  // the three terms, heads 0 … 15 × keys of step ks
#pragma unroll
          for (int t = 0; t < 3; ++t)
            ldmatrix_x4(pf[t], &sm.p_terms[t][lane % 8 + 8 * (lane / 8 % 2)][16 * ks + 8 * (lane / 16)]);
#pragma unroll
          for (int j = 0; j < S::kNTiles; j += 2) {
            uint32_t v[4];  // keys of step ks × dims of tiles j, j+1
            ldmatrix_x4_trans(v, &sm.kv[16 * ks + lane % 8 + 8 * (lane / 8 % 2)][wd0 + 8 * j + 8 * (lane / 16)]);
#pragma unroll
            for (int t = 0; t < 3; ++t) {
              mma_bf16(acc[j], pf[t], v[0], v[1]);
              mma_bf16(acc[j + 1], pf[t], v[2], v[3]);
            }
          }
        }
      }
    }
  }

  // The block's partial, published to the cluster (sm.o aliases the BF16 tile: wait for every warp).
  __syncthreads();
#pragma unroll
  for (int j = 0; j < S::kNTiles; ++j) {
    const int d = wd0 + 8 * j + 2 * c;
    *reinterpret_cast<float2*>(&sm.o[g][d]) = make_float2(acc[j][0], acc[j][1]);
    *reinterpret_cast<float2*>(&sm.o[g + 8][d]) = make_float2(acc[j][2], acc[j][3]);
  }
  if (sk == 0) sm.m[sh] = m_run, sm.l[sh] = l_run;
  cluster.sync();  // every block's o, m, l visible to the cluster

  // Combine: block `rank` finishes heads rank·kHeadsPerBlock … (output pairs rank·kPairsPerBlock
  // …), over blocks 0 … kSplit−1 in order. o = Σ_b e^(m_b − M)·o_b / (Σ_b e^(m_b − M)·l_b +
  // e^(sink − M)) (§4.3). Remote shared memory is slow to reach, so its reads go out together:
  // first every rank's (m, l) of the block's heads, one thread each; then one thread per head
  // forms the weights and the denominator (in rank order); then each thread loads its pairs' o
  // from all ranks at once and adds them in rank order.
  const int hb0 = rank * kHeadsPerBlock;  // the block's first head within the group
  float rm = -INFINITY, rl = 0.0f;
  if (threadIdx.x < kHeadsPerBlock * kSplit) {
    const int b = threadIdx.x / kHeadsPerBlock, hh = threadIdx.x % kHeadsPerBlock;
    rm = cluster.map_shared_rank(&sm.m[0], b)[hb0 + hh];
    rl = cluster.map_shared_rank(&sm.l[0], b)[hb0 + hh];
  }
  // Rank b's (m, l) of head hh travel to the head's thread by shuffles (the 16 values sit in the
  // first warp's lanes b·kHeadsPerBlock + hh).
  if (threadIdx.x < kWarpSize) {
    float mb[kSplit], lb[kSplit];
#pragma unroll
    for (int b = 0; b < kSplit; ++b) {
      mb[b] = __shfl_sync(kFullMask, rm, b * kHeadsPerBlock + threadIdx.x % kHeadsPerBlock);
      lb[b] = __shfl_sync(kFullMask, rl, b * kHeadsPerBlock + threadIdx.x % kHeadsPerBlock);
    }
    if (threadIdx.x < kHeadsPerBlock) {
      const int hh = threadIdx.x, hg = h0 + hb0 + hh;
      float M = -INFINITY;
#pragma unroll
      for (int b = 0; b < kSplit; ++b) M = fmaxf(M, mb[b]);
      float den = 0.0f;
#pragma unroll
      for (int b = 0; b < kSplit; ++b) {
        const bool valid = M != -INFINITY && mb[b] != -INFINITY;  // a block without valid keys adds nothing
        const float wb = valid ? expf(mb[b] - M) : 0.0f;
        if (valid) den = fmaf(wb, lb[b], den);
        sm.comb_w[hh][b] = wb;
        sm.comb_valid[hh][b] = valid;
      }
      sm.comb_any[hh] = M != -INFINITY;  // no valid key in the whole list: o = 0
      sm.comb_inv[hh] = M != -INFINITY && hg < p.H ? 1.0f / (den + expf(p.sink[hg] - M)) : 0.0f;  // §4.3: the sink joins the denominator only
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < S::kPairsPerBlock; e += kThreads) {
    const int gp = rank * S::kPairsPerBlock + e;
    const int h = gp / (D / 2), d = 2 * (gp % (D / 2)), hh = h - hb0;
    const int hg = h0 + h;
    if (hg >= p.H) continue;
    float2 ob[kSplit];
#pragma unroll
    for (int b = 0; b < kSplit; ++b)
      ob[b] = *reinterpret_cast<const float2*>(&cluster.map_shared_rank(&sm.o[0][0], b)[h * D + d]);
    float o0 = 0.0f, o1 = 0.0f;
    if (sm.comb_any[hh]) {
#pragma unroll
      for (int b = 0; b < kSplit; ++b) {
        if (!sm.comb_valid[hh][b]) continue;
        o0 = fmaf(sm.comb_w[hh][b], ob[b].x, o0);
        o1 = fmaf(sm.comb_w[hh][b], ob[b].y, o1);
      }
      o0 *= sm.comb_inv[hh];
      o1 *= sm.comb_inv[hh];
    }
    o0 = __bfloat162float(__float2bfloat16_rn(o0));
    o1 = __bfloat162float(__float2bfloat16_rn(o1));
    if (d >= S::kNope)  // §4.4 inverse RoPE on the BF16 output, pair (d, d+1) of the rope slice
      inverse_rope_pair(o0, o1, float(p.pos[qi]) * p.inv_freq[(d - S::kNope) / 2]);
    *reinterpret_cast<__nv_bfloat162*>(p.out + (int64_t(qi) * p.H + hg) * D + d) = __floats2bfloat162_rn(o0, o1);
  }
  cluster.sync();  // peers may still read this block's shared memory
}

template <int D>
void launch_dim(const SparseAttnParams& p, cudaStream_t stream) {
  auto* kernel = &sparse_attention_kernel<D>;
  constexpr size_t kSmem = sizeof(Smem<D>);
  static std::atomic<uint64_t> raised{0};
  opt_in_shared_memory(reinterpret_cast<const void*>(kernel), kSmem, raised);
  const dim3 grid((p.H + kHeads - 1) / kHeads * kSplit, p.n_q);  // x: whole clusters
  launch_kernel(kernel, grid, kThreads, kSmem, stream, p);
}

}  // namespace

void launch_sparse_attention(const SparseAttnParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.q && p.indices && p.sink && p.pos && p.inv_freq && p.out);
  DSV4_CHECK_MSG(p.keys || (p.cache && p.block_size > 0), "sparse_attention: neither BF16 key rows nor a cache");
  DSV4_CHECK_MSG(p.n_q >= 0 && p.n_q <= kMaxGridY && p.H >= 1 && p.H <= (1 << 20) && p.n_idx >= 0,
                 "n_q=", p.n_q, " H=", p.H, " n_idx=", p.n_idx);
  DSV4_CHECK_MSG(kv_dim_supported(p.dim), "sparse_attention: dim=", p.dim, " (supported: ", kKvDimNano, ", ", kKvDimV4, ")");
  if (p.n_q == 0) return;
  if (p.keys)
    launch_sparse_attention_prefill(p, stream);
  else if (p.dim == kKvDimV4)
    launch_dim<kKvDimV4>(p, stream);
  else
    launch_dim<kKvDimNano>(p, stream);
}

}  // namespace dsv4::cuda
