// Prefill sparse attention kernel and launcher; see sparse_attention_prefill.cuh for why it exists
// and sparse_attention.cuh for the contract.
// A block serves one query and 64 heads with 8 warps. Warp w owns heads 16·(w % 4) … +15 (the
// MMA's m) and half h = w / 4, which is a half of each key tile for Q·Kᵀ and a half of the dims
// for P·V. Per 32-key tile:
//   1. S = Q·Kᵀ over all dims: each warp its 16 heads × 16 keys (m16n8k16 BF16 MMAs in four
//      chains of a quarter of the dims; Q and the tile in shared memory, read with ldmatrix);
//   2. the FP32 online-softmax update: the row maxima of the two key halves meet in shared memory,
//      so both warps of a head group hold the same running max; each lane keeps its own partial
//      row sums, added up once at the end;
//   3. p = exp(ℓ − m) as three BF16 terms hi + mid + lo (FP32 accuracy, as the decode kernel),
//      written to shared memory;
//   4. O = alpha·O + (P_hi + P_mid + P_lo)·V over the warp's half of the dims (128 FP32
//      accumulators per lane at dim 512), the tile's products summed apart and added in FP32.
// The next tile's rows load with cp.async during steps 1–4 (two buffers). List entries are read in
// order, 32 per tile, masked entries included (their rows are zeros and their logits −inf), so the
// list needs no compaction: attention_indices.cuh writes the valid entries as a prefix anyway.
#include "cuda/kernels/sparse_attention_prefill.cuh"

#include <cuda_pipeline.h>

#include <atomic>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/kv_cache.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kBlockHeads = 64;  // 4 head groups of 16
constexpr int kTileKeys = 32;    // two halves of 16 keys; two k16 steps of P·V
// Q·Kᵀ chains per logit. An MMA adds its products into the accumulator without rounding to
// nearest (tests/cuda/sparse_attention.cpp sum_model: ≤ 8u of the chain's sum each), so a chain's
// error grows with its length: one chain over all 512 dims bounds a logit's error at 4× the
// decode kernel's, which sums quarters of the dims in four warps. The same split here.
constexpr int kQkChains = 4;
// P·V for the same reason: one chain over the whole list bounds an output's error at 8× the
// decode kernel's (which splits the list over 8 blocks), and it rounded off the exact BF16 3–4×
// as often at dim 512 (H100, 2026-12-05). So each tile's products are summed in fresh chains of 6
// MMAs that join O in FP32, kPvChunk n8 tiles at a time: chains for the warp's whole half of the
// dims would need 128 more registers than a thread has. (CMakeLists.txt: ptxas -O1 keeps them
// from spilling.)
constexpr int kPvChunk = 8;
static_assert(kWarps == 2 * (kBlockHeads / 16), "a warp per (head group, half)");
static_assert(kTileKeys == 32, "one ballot word of valid keys per tile");

template <int D>
struct Shape {
  static constexpr int kNope = kv_nope(D);
  static constexpr int kStride = D + 8;      // BF16 row: +16 bytes, ldmatrix conflict-free
  static constexpr int kHalf = D / 2;        // a warp's P·V dims
  static constexpr int kQkSteps = D / 16;    // k16 steps of Q·Kᵀ
  static constexpr int kPvTiles = kHalf / 8;  // n8 tiles of P·V per warp
  static constexpr int kRowChunks = D * 2 / 16;  // 16-byte pieces per BF16 row
  static_assert(kPvTiles % kPvChunk == 0 && kPvChunk % 2 == 0 && kNope % 8 == 0,
                "whole chunks of n8 tile pairs; RoPE pairs never straddle a tile");
};

template <int D>
struct Smem {
  using S = Shape<D>;
  alignas(16) __nv_bfloat16 q[kBlockHeads][S::kStride];
  alignas(16) __nv_bfloat16 kv[2][kTileKeys][S::kStride];
  alignas(16) __nv_bfloat16 p_terms[3][kBlockHeads][kTileKeys + 8];  // +16 B: conflict-free ldmatrix
  float red_max[2][kBlockHeads];  // per key half: each head's tile maximum
  float red_l[2][kBlockHeads];    // per half: each head's row sum, at the end
  uint32_t valid[2];              // per buffer: bit k = key k of the tile is a row
};

template <int D>
__global__ void __launch_bounds__(kThreads, 1) sparse_attention_prefill_kernel(SparseAttnParams p) {
  using S = Shape<D>;
  extern __shared__ __align__(16) uint8_t smem_bytes[];
  Smem<D>& sm = *reinterpret_cast<Smem<D>*>(smem_bytes);
  wait_for_prior_grids();
  const int qi = blockIdx.y, h0 = blockIdx.x * kBlockHeads;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int g = lane / 4, c = lane % 4;  // MMA fragment row group and column pair
  const int hw = 16 * (warp % 4);        // the warp's first head in the block
  const int half = warp / 4;             // its key half (Q·Kᵀ) and dim half (P·V)
  const int32_t* idx = p.indices + int64_t(qi) * p.n_idx;
  const int n_list = p.count ? min(max(p.count[qi], 0), p.n_idx) : p.n_idx;
  const int n_tiles = (n_list + kTileKeys - 1) / kTileKeys;
  const uint4 zero = make_uint4(0u, 0u, 0u, 0u);

  // Tile t's rows into buffer b (masked entries and entries past the list: zero rows, so V stays
  // finite where P is 0), and which of them are rows.
  const auto stage = [&](int t, int b) {
    for (int e = threadIdx.x; e < kTileKeys * S::kRowChunks; e += kThreads) {
      const int k = e / S::kRowChunks, j = e % S::kRowChunks, i = t * kTileKeys + k;
      const int32_t r = i < n_list ? idx[i] : -1;
      if (r >= 0)
        __pipeline_memcpy_async(&sm.kv[b][k][8 * j], p.keys + int64_t(r) * D + 8 * j, 16);
      else
        *reinterpret_cast<uint4*>(&sm.kv[b][k][8 * j]) = zero;
    }
    if (warp == 0) {
      const int i = t * kTileKeys + lane;
      const unsigned rows = __ballot_sync(kFullMask, i < n_list && idx[i] >= 0);
      if (lane == 0) sm.valid[b] = rows;
    }
    __pipeline_commit();
  };

  if (n_tiles > 0) {  // the query's heads (zeros past H: they score zeros and are never written)
    for (int e = threadIdx.x; e < kBlockHeads * S::kRowChunks; e += kThreads) {
      const int h = e / S::kRowChunks, j = e % S::kRowChunks;
      if (h0 + h < p.H)
        __pipeline_memcpy_async(&sm.q[h][8 * j], p.q + (int64_t(qi) * p.H + h0 + h) * D + 8 * j, 16);
      else
        *reinterpret_cast<uint4*>(&sm.q[h][8 * j]) = zero;
    }
    stage(0, 0);  // one cp.async group with the query
  }

  float acc[S::kPvTiles][4] = {};  // O of heads hw+g / hw+g+8 (regs 0-1 / 2-3), the warp's dim half
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};  // heads hw+g, hw+g+8
  for (int t = 0; t < n_tiles; ++t) {
    const int b = t & 1;
    __pipeline_wait_prior(0);
    __syncthreads();  // tile t is in; every warp is done with tile t−1 (buffer b^1, P, maxima)
    if (t + 1 < n_tiles) stage(t + 1, b ^ 1);
    const uint32_t valid = sm.valid[b];

    // 1. Logits of heads hw+g / hw+g+8 × keys 16·half + 8j + 2c + {0, 1}, in kQkChains MMA chains
    //    over consecutive quarters of the dims, added in FP32 in order (the decode kernel's four
    //    warp partials).
    float s[2][4] = {};
#pragma unroll 1
    for (int part = 0; part < kQkChains; ++part) {
      float sp[2][4] = {};
#pragma unroll
      for (int kk = 0; kk < S::kQkSteps / kQkChains; ++kk) {
        const int ks = part * (S::kQkSteps / kQkChains) + kk;
        uint32_t a[4], bk[4];
        ldmatrix_x4(a, &sm.q[hw + lane % 16][16 * ks + 8 * (lane / 16)]);
        ldmatrix_x4(bk, &sm.kv[b][16 * half + lane % 8 + 8 * (lane / 16)][16 * ks + 8 * (lane / 8 % 2)]);
        mma_bf16(sp[0], a, bk[0], bk[1]);
        mma_bf16(sp[1], a, bk[2], bk[3]);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] += sp[j][e];  // the first: 0 + sp, exact
    }

    // 2. Online softmax. Lane (g, c) holds heads g and g+8 of its group at 4 keys each.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool ok = (valid >> (16 * half + 8 * j + 2 * c + e)) & 1u;
        s[j][e] = ok ? s[j][e] * p.softmax_scale : -INFINITY;
        s[j][2 + e] = ok ? s[j][2 + e] * p.softmax_scale : -INFINITY;
        mx[0] = fmaxf(mx[0], s[j][e]);
        mx[1] = fmaxf(mx[1], s[j][2 + e]);
      }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(kFullMask, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(kFullMask, mx[i], 2));
    }
    if (c == 0) sm.red_max[half][hw + g] = mx[0], sm.red_max[half][hw + g + 8] = mx[1];
    __syncthreads();  // both halves' maxima
    float alpha[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int h = hw + g + 8 * i;
      const float m_new = fmaxf(m_run[i], fmaxf(sm.red_max[0][h], sm.red_max[1][h]));
      // −inf only while no valid key has been seen: then every p is 0 and O is still 0.
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      alpha[i] = expf(m_run[i] - m_use);  // m_run = −inf before the first valid key: alpha = 0
      m_run[i] = m_new;
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) s[j][2 * i + e] = expf(s[j][2 * i + e] - m_use);  // −inf → 0
      l_run[i] = l_run[i] * alpha[i] + ((s[0][2 * i] + s[0][2 * i + 1]) + (s[1][2 * i] + s[1][2 * i + 1]));
    }

    // 3. P as hi, mid, lo; each remainder r − bf16(r) is exact in FP32.
#pragma unroll
    for (int term = 0; term < 3; ++term)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int k = 16 * half + 8 * j + 2 * c;
        *reinterpret_cast<uint32_t*>(&sm.p_terms[term][hw + g][k]) = bf16x2_bits(s[j][0], s[j][1]);
        *reinterpret_cast<uint32_t*>(&sm.p_terms[term][hw + g + 8][k]) = bf16x2_bits(s[j][2], s[j][3]);
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] -= __bfloat162float(__float2bfloat16_rn(s[j][e]));
      }
    __syncthreads();  // both halves' P

    // 4. O = alpha·O + P·V over dims half·D/2 … of the tile's 32 keys: each chunk of kPvChunk n8
    //    tiles sums the tile's 6 MMAs in fresh chains, which join O in one FP32 FMA each.
    uint32_t pf[kTileKeys / 16][3][4];  // P's terms for both k16 steps
#pragma unroll
    for (int ks = 0; ks < kTileKeys / 16; ++ks)
#pragma unroll
      for (int term = 0; term < 3; ++term)
        ldmatrix_x4(pf[ks][term], &sm.p_terms[term][hw + lane % 16][16 * ks + 8 * (lane / 16)]);
#pragma unroll
    for (int j0 = 0; j0 < S::kPvTiles; j0 += kPvChunk) {
      float part[kPvChunk][4] = {};
#pragma unroll
      for (int j = 0; j < kPvChunk; j += 2)
#pragma unroll
        for (int ks = 0; ks < kTileKeys / 16; ++ks) {
          uint32_t v[4];  // keys of step ks × dims of tiles j0+j, j0+j+1
          ldmatrix_x4_trans(v, &sm.kv[b][16 * ks + lane % 8 + 8 * (lane / 8 % 2)]
                                     [half * S::kHalf + 8 * (j0 + j) + 8 * (lane / 16)]);
#pragma unroll
          for (int term = 0; term < 3; ++term) {
            mma_bf16(part[j], pf[ks][term], v[0], v[1]);
            mma_bf16(part[j + 1], pf[ks][term], v[2], v[3]);
          }
        }
#pragma unroll
      for (int j = 0; j < kPvChunk; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j0 + j][e] = fmaf(acc[j0 + j][e], alpha[e / 2], part[j][e]);
    }
  }

  // Row sums: the quad's lanes, then the two key halves, in a fixed order.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l_run[i] += __shfl_xor_sync(kFullMask, l_run[i], 1);
    l_run[i] += __shfl_xor_sync(kFullMask, l_run[i], 2);
  }
  if (c == 0) sm.red_l[half][hw + g] = l_run[0], sm.red_l[half][hw + g + 8] = l_run[1];
  __syncthreads();

  // o = O / (l + e^(sink − m)) (§4.3: the sink joins the denominator only), BF16, then the §4.4
  // inverse RoPE on the rope slice's pairs, BF16 again.
  const int pos = p.pos[qi];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int hb = hw + g + 8 * i, h = h0 + hb;
    if (h >= p.H) continue;
    const float l = sm.red_l[0][hb] + sm.red_l[1][hb];
    const float inv = m_run[i] == -INFINITY ? 0.0f : 1.0f / (l + expf(p.sink[h] - m_run[i]));
    __nv_bfloat16* out = p.out + (int64_t(qi) * p.H + h) * D;
#pragma unroll
    for (int j = 0; j < S::kPvTiles; ++j) {
      const int d = half * S::kHalf + 8 * j + 2 * c;
      float o0 = __bfloat162float(__float2bfloat16_rn(acc[j][2 * i] * inv));
      float o1 = __bfloat162float(__float2bfloat16_rn(acc[j][2 * i + 1] * inv));
      if (d >= S::kNope) inverse_rope_pair(o0, o1, float(pos) * p.inv_freq[(d - S::kNope) / 2]);
      *reinterpret_cast<__nv_bfloat162*>(out + d) = __floats2bfloat162_rn(o0, o1);
    }
  }
}

template <int D>
void launch_dim(const SparseAttnParams& p, cudaStream_t stream) {
  auto* kernel = &sparse_attention_prefill_kernel<D>;
  constexpr size_t kSmem = sizeof(Smem<D>);
  static std::atomic<uint64_t> raised{0};
  opt_in_shared_memory(reinterpret_cast<const void*>(kernel), kSmem, raised);
  const dim3 grid((p.H + kBlockHeads - 1) / kBlockHeads, p.n_q);
  launch_kernel(kernel, grid, kThreads, kSmem, stream, p);
}

}  // namespace

void launch_sparse_attention_prefill(const SparseAttnParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.keys);
  if (p.dim == kKvDimV4)
    launch_dim<kKvDimV4>(p, stream);
  else
    launch_dim<kKvDimNano>(p, stream);
}

}  // namespace dsv4::cuda
