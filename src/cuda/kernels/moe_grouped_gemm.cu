// Grouped FP4 expert GEMM kernel and launcher; see moe_grouped_gemm.cuh for the contract, the
// arithmetic and the register/shared-memory layout (moe_gemm_layout).
//
// A persistent grid walks the items (token chunk of one expert × 128 weight rows of one tensor),
// decoded from the plan's offsets on the device: no count ever comes back to the host. Per item,
// 8 warps each stream 16 weight rows (16-byte loads, kStageGroups K groups in flight per lane,
// bypassing L1), transpose the words inside each quad (shuffles, or through shared memory) and
// expand them in registers; the chunk's activations go through shared memory
// as F16, kStageGroups groups per stage, double-buffered (loaded into registers during the
// previous stage's MMAs). One __syncthreads per stage.
#include "cuda/kernels/moe_grouped_gemm.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/gemv_common.cuh"
#include "cuda/kernels/launch.cuh"
#include "cuda/kernels/moe_grouped_work.cuh"
#include "cuda/kernels/moe_grouped_wgmma.cuh"

namespace dsv4::cuda {
namespace {

namespace L = moe_gemm_layout;
using moe_grouped_work::pick;
using moe_grouped_work::plan_chunks;
using Fmt = ExpertWeightFormat;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kTileN = kWarps * L::kWarpRows;  // weight rows per item
// Padding per staged activation row, in F16: a row stride ≡ 64 bytes (mod 128) puts the two
// tokens of a quarter-warp's 16-byte reads (lanes g, g+1, four runs each) on disjoint banks.
constexpr int kXPadHalves = 32;
constexpr int kRunCols = 8;  // columns per staged run (x_position permutes inside one)
static_assert(kTileN == 128, "tiles of N are 128 rows (N % 128 == 0)");
static_assert(L::kBlocks == 4 && L::kBlockK == 2 * 16, "a block is two m16n8k16 steps, a group four blocks");
static_assert(L::kBlockK == kMXFP4BlockSize, "one MMA block is one MXFP4 scale block");
static_assert(L::kGroupK == kActBlockSize, "one K group is one activation scale block");
static_assert(L::kBlockK % (2 * kNVFP4BlockSize) == 0 && 8 <= kNVFP4BlockSize,
              "a lane's 8 columns of a block sit inside one NVFP4 scale block");

// The launch shapes: kTokTiles B tiles of 8 tokens per chunk, kStageGroups K groups per
// shared-memory stage (= weight loads in flight per lane and row), kSmemT the weight words'
// quad transpose through shared memory instead of shuffles, kMinBlocks blocks per SM (the
// register budget). Measured on an H200 (bench/results/2026-12-04-h200-grouped-decode.md, the
// figures after "→" from 2026-12-04-h200-grouped-scales.md):
//   decode, few rows (< kFewRows selections): 1 tile, 2 groups, shared-memory transpose, two
//     blocks per SM (118 registers) — one item per block, so latency decides: 30.8 → 34.6 % of
//     copy at batch 1, against 29.7 % with shuffles and 23 % with three blocks per SM;
//   decode: the same with three blocks per SM (80 registers, 48 bytes spilled outside the K
//     loop, 24 warps per SM): batch 64 49.7 → 53.9 % of copy, against 44.7 % with two blocks
//     and 43.6 % with shuffles and two (before). The kernel is issue-bound there (61 %
//     issue-active, the top stall a fixed-latency dependency), so fewer instructions per weight
//     byte and more warps to interleave are what pay. (An E4M3 form, mma.sync m16n8k32 with each
//     nibble placed as an E4M3 byte, would take 7 instructions per word of nibbles instead of
//     11 and half the MMAs, but sm_90 has no native FP8 mma.sync: the compiler emulates it with
//     F16 conversions and F16 MMAs (NVIDIA's answer in CUTLASS issue #1986). FP8 on Hopper's
//     tensor cores means wgmma, which moe_grouped_wgmma.cu uses.)
//   prefill: 8 tiles, 2 groups, shuffles, one block per SM (199 / 255 registers; not re-tuned).
template <int kTokTiles_, int kStageGroups_, bool kSmemT_, int kMinBlocksPerSm>
struct Shape {
  static constexpr int kTokTiles = kTokTiles_, kStageGroups = kStageGroups_;
  static constexpr int kChunkRows = kTokTiles * L::kTileRows;
  static constexpr int kStageK = kStageGroups * L::kGroupK;
  static constexpr int kRowHalves = kStageK + kXPadHalves;
  static constexpr int kRunsPerRow = kStageK / kRunCols;
  static constexpr int kRuns = kChunkRows * kRunsPerRow;
  static constexpr int kRunsPerThread = (kRuns + kThreads - 1) / kThreads;
  static constexpr bool kSmemT = kSmemT_;
  static constexpr int kMinBlocks = kMinBlocksPerSm;
  // The transpose buffer: per warp two (alternating K groups) of two rows × 32 slots of 16 bytes.
  static constexpr int kTransWords = 2 * 2 * 32 * 4;
  static constexpr size_t kTransBytes = kSmemT ? size_t(kWarps) * kTransWords * 4 : 0;
  // Shared memory: activations [2][chunk rows][row halves] F16, their scales [2][chunk rows]
  // [stage groups] FP32, the transpose buffers, the plan's offsets and chunk starts [E + 1]
  // each, the chunk's x rows.
  static constexpr size_t kXsBytes = size_t(2) * kChunkRows * kRowHalves * 2;
  static constexpr size_t kSxBytes = size_t(2) * kChunkRows * kStageGroups * 4;
  static constexpr size_t kSmemBytes =
      kXsBytes + kSxBytes + kTransBytes + size_t(2) * (kGroupedMaxExperts + 1) * 4 + kChunkRows * 4;
  static_assert((kRowHalves * 2) % 128 == 64, "row stride ≡ 64 bytes mod 128");
  static_assert((kXsBytes + kSxBytes) % 16 == 0, "the transpose buffer is read 16 bytes at a time");
};

// D += A·B, m16n8k16, F16 × F16 → FP32 (PTX ISA "mma.m16n8k16" fragment layout: a0/a1 rows g /
// g+8 at K slots 2q, 2q+1; a2/a3 the same rows at 2q+8, 2q+9; b0/b1 column g at those slots;
// d0/d1 row g columns 2q, 2q+1, d2/d3 row g+8).
__device__ __forceinline__ void mma_f16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                        uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// F16 pair product, subnormals kept (no .ftz): exact here (moe_grouped_gemm.cuh).
__device__ __forceinline__ uint32_t hmul2_rn(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// Two E4M3 bytes (low = first) -> F16 pair, exactly (hardware conversion).
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t pair) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(pair & 0xffffu), __NV_E4M3);
  return uint32_t(h.x) | (uint32_t(h.y) << 16);
}

// 8 E4M3 activations (columns 8c..8c+7 of a row, little-endian in v) -> the staged F16 run.
__device__ __forceinline__ uint4 stage_run(uint2 v) {
  uint32_t pairs[4];
  L::run_pairs(v.x, v.y, pairs);
  return make_uint4(e4m3x2_to_f16x2(pairs[0]), e4m3x2_to_f16x2(pairs[1]), e4m3x2_to_f16x2(pairs[2]),
                    e4m3x2_to_f16x2(pairs[3]));
}

// Scale bytes of one K group of one weight row: MXFP4 4 × UE8M0 (one per block), NVFP4 8 × E4M3
// (one per 16 columns).
template <Fmt kFmt>
using GroupScale = std::conditional_t<kFmt == Fmt::kNVFP4, uint2, uint32_t>;

template <Fmt kFmt>
__device__ __forceinline__ GroupScale<kFmt> load_group_scale(const uint8_t* row_scale, int group) {
  if constexpr (kFmt == Fmt::kNVFP4)
    return __ldg(reinterpret_cast<const uint2*>(row_scale) + group);
  else
    return __ldg(reinterpret_cast<const uint32_t*>(row_scale) + group);
}

template <Fmt kFmt, class S, bool kOutF32>
__global__ void __launch_bounds__(kThreads, S::kMinBlocks) grouped_fp4_kernel(MoeGroupedParams p) {
  wait_for_prior_grids();
  constexpr int kTokTiles = S::kTokTiles, kStageGroups = S::kStageGroups;
  constexpr bool kNv = kFmt == Fmt::kNVFP4;
  constexpr int R = S::kChunkRows;
  extern __shared__ uint4 smem[];
  uint16_t* xs = reinterpret_cast<uint16_t*>(smem);                              // [2][R][kRowHalves]
  float* sxs = reinterpret_cast<float*>(reinterpret_cast<char*>(smem) + S::kXsBytes);  // [2][R][kStageGroups]
  uint32_t* trans = reinterpret_cast<uint32_t*>(reinterpret_cast<char*>(sxs) + S::kSxBytes);  // [warps][kTransWords]
  int* offs = reinterpret_cast<int*>(reinterpret_cast<char*>(trans) + S::kTransBytes);  // [E + 1]
  int* chunk_start = offs + (kGroupedMaxExperts + 1);                                   // [E + 1]
  int* tok_row = chunk_start + (kGroupedMaxExperts + 1);                                // [R]

  const int tid = threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int g = lane / 4, q = lane % 4;
  const int E = p.E, N = p.N, K = p.K;
  // The transpose through shared memory (kSmemT, L::trans_slot): this warp's two buffers.
  uint32_t* trans_warp = trans + warp * S::kTransWords;
  const int n_groups = K / L::kGroupK, n_stages = (n_groups + kStageGroups - 1) / kStageGroups;
  const int tiles_per_mat = N / kTileN;

  plan_chunks(p.offsets, E, R, offs, chunk_start);
  if (offs[E] > p.max_sel) __trap();  // the plan holds more rows than the launch was shaped for
  const int n_chunks = chunk_start[E];
  const int n_items = n_chunks * tiles_per_mat * p.n_mats;

  for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
    const L::GroupedItem it = L::decode_item(item, n_chunks, chunk_start, E, offs, R, tiles_per_mat, kTileN);
    if (tid < R) tok_row[tid] = tid < it.n_tok ? (p.x_row ? p.x_row[it.j0 + tid] : it.j0 + tid) : -1;
    __syncthreads();
    // B tiles with a real token; with one tile per chunk that is always the one (an item has a
    // token), which the compiler cannot know: the constant saves a branch and a register per block.
    const int n_active = kTokTiles == 1 ? 1 : (it.n_tok + L::kTileRows - 1) / L::kTileRows;

    // This lane's weight rows n_row[0] = n0 + 16·warp + g and n_row[1] = n_row[0] + 8.
    const uint8_t* w_row[2];
    const uint8_t* s_row[2];
    int n_row[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      n_row[r] = it.n0 + warp * L::kWarpRows + g + 8 * r;
      const int64_t row = int64_t(it.expert) * N + n_row[r];
      w_row[r] = pick(p.w, it.mat) + row * (K / 2) + 16 * q;  // lane q: block q of every group
      s_row[r] = pick(p.w_scale, it.mat) + row * (kNv ? K / kNVFP4BlockSize : K / kMXFP4BlockSize);
    }

    // Weight ring: group i of a stage in slot i, the next stage's group loaded once it is used.
    uint4 w_raw[kStageGroups][2];
    GroupScale<kFmt> s_raw[kStageGroups][2];
    const auto load_group = [&](int slot, int group) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        w_raw[slot][r] = load_stream(w_row[r] + int64_t(group) * (L::kGroupK / 2));
        s_raw[slot][r] = load_group_scale<kFmt>(s_row[r], group);
      }
    };
#pragma unroll
    for (int i = 0; i < kStageGroups; ++i)
      if (i < n_groups) load_group(i, i);

    // Activation staging: run u of a stage = token u / kRunsPerRow, columns 8·(u % kRunsPerRow).
    uint2 x_raw[S::kRunsPerThread];
    float sx_raw = 0.0f;
    const auto load_x = [&](int stage) {
#pragma unroll
      for (int m = 0; m < S::kRunsPerThread; ++m) {
        const int u = tid + m * kThreads, t = u / S::kRunsPerRow;
        const int col = stage * S::kStageK + (u % S::kRunsPerRow) * kRunCols;
        const int row = u < S::kRuns ? tok_row[t] : -1;
        x_raw[m] = row >= 0 && col < K ? __ldg(reinterpret_cast<const uint2*>(p.x + int64_t(row) * K + col))
                                       : make_uint2(0, 0);
      }
      if (tid < R * kStageGroups) {
        const int t = tid / kStageGroups, group = stage * kStageGroups + tid % kStageGroups;
        const int row = tok_row[t];
        sx_raw = row >= 0 && group < n_groups ? e8m0_to_float_select(p.x_scale[int64_t(row) * n_groups + group]) : 0.0f;
      }
    };
    const auto store_x = [&](int buf) {
#pragma unroll
      for (int m = 0; m < S::kRunsPerThread; ++m) {
        const int u = tid + m * kThreads;
        if (u < S::kRuns) {
          const int t = u / S::kRunsPerRow, c = u % S::kRunsPerRow;
          *reinterpret_cast<uint4*>(xs + (size_t(buf) * R + t) * S::kRowHalves + c * kRunCols) = stage_run(x_raw[m]);
        }
      }
      if (tid < R * kStageGroups) sxs[buf * R * kStageGroups + tid] = sx_raw;
    };
    load_x(0);
    store_x(0);
    __syncthreads();

    float acc[kTokTiles][4];  // running FP32 totals, C-fragment order
    float grp[kTokTiles][4];  // this group's sum before s_x (MXFP4: Σ s_w·block; NVFP4: the MMA chain)
#pragma unroll
    for (int t = 0; t < kTokTiles; ++t)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[t][c] = 0.0f;

    for (int stage = 0; stage < n_stages; ++stage) {
      const int buf = stage & 1;
      const bool more = stage + 1 < n_stages;
      if (more) load_x(stage + 1);
#pragma unroll
      for (int i = 0; i < kStageGroups; ++i) {
        const int group = stage * kStageGroups + i;
        if (group >= n_groups) break;  // uniform: the last stage may be short
        uint32_t wt[2][4];
        const GroupScale<kFmt> sc[2] = {s_raw[i][0], s_raw[i][1]};
        const bool next = group + kStageGroups < n_groups;
        // Quad transpose: wt[r][b] becomes columns 32b + 8q .. +7 of the group (layout note).
        if constexpr (S::kSmemT) {
          // Stored straight from the ring slot, which the next load then refills: no register
          // copies of the words (the shuffle form below still copies them: 8 moves per group).
          uint32_t* tb = trans_warp + (group & 1) * (S::kTransWords / 2);  // alternate: one __syncwarp per group
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const uint32_t w4[4] = {w_raw[i][r].x, w_raw[i][r].y, w_raw[i][r].z, w_raw[i][r].w};
#pragma unroll
            for (int j = 0; j < 4; ++j) tb[r * 128 + L::trans_slot(g, j) * 4 + q] = w4[j];
          }
          if (next) load_group(i, group + kStageGroups);
          __syncwarp();
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const uint4 v = *reinterpret_cast<const uint4*>(tb + r * 128 + L::trans_slot(g, q) * 4);
            wt[r][0] = v.x;
            wt[r][1] = v.y;
            wt[r][2] = v.z;
            wt[r][3] = v.w;
          }
        } else {
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            wt[r][0] = w_raw[i][r].x;
            wt[r][1] = w_raw[i][r].y;
            wt[r][2] = w_raw[i][r].z;
            wt[r][3] = w_raw[i][r].w;
          }
          if (next) load_group(i, group + kStageGroups);
#pragma unroll
          for (int round = 0; round < 2; ++round)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              uint32_t send[2], recv[2];
              L::quad_send(wt[r], q, round, send);
              recv[0] = __shfl_xor_sync(kFullMask, send[0], 1 << round);
              recv[1] = __shfl_xor_sync(kFullMask, send[1], 1 << round);
              L::quad_recv(wt[r], q, round, recv);
            }
        }
        // This lane's B reads: token g of tile t, columns 32b + 8q of group i of the stage.
        const uint16_t* x_lane = xs + (size_t(buf) * R + g) * S::kRowHalves + i * L::kGroupK + 8 * q;
        // The group's MMAs; kPlain: every MXFP4 scale byte of the warp is 1..254 (the fast form).
        const auto mma_blocks = [&](auto plain) {
          [[maybe_unused]] constexpr bool kPlain = decltype(plain)::value;
#pragma unroll
          for (int b = 0; b < L::kBlocks; ++b) {
            uint32_t lo[2][2], hi[2][2];  // [row r][step s]
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              L::e2m1_word_to_f16x2(wt[r][b], lo[r], hi[r]);
              if constexpr (kNv) {  // fold the E4M3 scale of columns 32b + 8q.. (exact in F16)
                const int byte = L::nv_scale_byte(b, q);
                const uint32_t sb = ((byte < 4 ? sc[r].x : sc[r].y) >> (8 * (byte & 3))) & 0xffu;
                const uint32_t s2 = e4m3x2_to_f16x2(sb | (sb << 8));
#pragma unroll
                for (int s = 0; s < 2; ++s) {
                  lo[r][s] = hmul2_rn(lo[r][s], s2);
                  hi[r][s] = hmul2_rn(hi[r][s], s2);
                }
              }
            }
            [[maybe_unused]] float sw[2] = {0.0f, 0.0f};
            if constexpr (!kNv) {
#pragma unroll
              for (int r = 0; r < 2; ++r)
                sw[r] = kPlain ? __uint_as_float(L::ue8m0_plain_bits(sc[r], b))
                               : e8m0_to_float_select((sc[r] >> (8 * b)) & 0xffu);
            }
#pragma unroll
            for (int t = 0; t < kTokTiles; ++t) {
              if (t < n_active) {
                const uint4 bx = *reinterpret_cast<const uint4*>(x_lane + size_t(t) * L::kTileRows * S::kRowHalves + b * L::kBlockK);
                if constexpr (kNv) {
                  if (b == 0)
#pragma unroll
                    for (int c = 0; c < 4; ++c) grp[t][c] = 0.0f;
                  mma_f16(grp[t], lo[0][0], lo[1][0], hi[0][0], hi[1][0], bx.x, bx.y);
                  mma_f16(grp[t], lo[0][1], lo[1][1], hi[0][1], hi[1][1], bx.z, bx.w);
                } else {
                  float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                  mma_f16(part, lo[0][0], lo[1][0], hi[0][0], hi[1][0], bx.x, bx.y);
                  mma_f16(part, lo[0][1], lo[1][1], hi[0][1], hi[1][1], bx.z, bx.w);
#pragma unroll
                  for (int c = 0; c < 4; ++c)
                    grp[t][c] = b == 0 ? __fmul_rn(part[c], sw[c >> 1]) : __fmaf_rn(part[c], sw[c >> 1], grp[t][c]);
                }
              }
            }
          }
        };
        // MXFP4 takes the fast scale form unless some lane's scale bytes of this group hold 0x00 or
        // 0xFF; the vote keeps the branch warp-uniform. Both forms give the same values. NVFP4 has
        // no UE8M0 weight scales.
        if constexpr (kNv)
          mma_blocks(std::false_type{});
        else if (__any_sync(kFullMask, L::ue8m0_any_special(sc[0]) | L::ue8m0_any_special(sc[1])))
          mma_blocks(std::false_type{});
        else
          mma_blocks(std::true_type{});
        // Group end: × s_x of each token column, into the totals.
        const float* sx = sxs + (buf * R) * kStageGroups + i;
#pragma unroll
        for (int t = 0; t < kTokTiles; ++t) {
          if (t < n_active) {
#pragma unroll
            for (int c = 0; c < 4; ++c)
              acc[t][c] = __fmaf_rn(grp[t][c], sx[(t * L::kTileRows + 2 * q + (c & 1)) * kStageGroups], acc[t][c]);
          }
        }
      }
      if (more) store_x(buf ^ 1);
      __syncthreads();
    }

    // Epilogue: undo the F16 encoding's 2^-14 (and NVFP4's per-tensor scale), one rounding.
    const float out_scale = kNv ? __fmul_rn(kE2M1AsHalfScale, pick(p.global_scale, it.mat)[it.expert]) : kE2M1AsHalfScale;
    void* y = pick(p.y, it.mat);
#pragma unroll
    for (int t = 0; t < kTokTiles; ++t) {
      if (t < n_active) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int tok = t * L::kTileRows + 2 * q + (c & 1);
          if (tok < it.n_tok) {
            const float v = __fmul_rn(acc[t][c], out_scale);
            const int64_t at = int64_t(it.j0 + tok) * N + n_row[c >> 1];
            if constexpr (kOutF32)
              static_cast<float*>(y)[at] = v;
            else
              static_cast<__nv_bfloat16*>(y)[at] = __float2bfloat16_rn(v);
          }
        }
      }
    }
  }
}

// BF16 experts: a warp per weight row n and chunk of up to kBf16ChunkRows grouped rows of one
// expert (each weight row read once per chunk). Lane l sums the 8-column pieces l, l + 32, … of
// K in order (exact BF16 products, FP32 accumulation), then a fixed butterfly: a row's sum is the
// same whatever chunk it is in and however many rows share it.
constexpr int kBf16ChunkRows = 8;
constexpr int kBf16Unroll = 4;  // weight loads in flight per lane

__global__ void __launch_bounds__(kThreads) grouped_bf16_kernel(MoeGroupedBf16Params p) {
  wait_for_prior_grids();
  __shared__ int offs[kGroupedMaxExperts + 1], chunk_start[kGroupedMaxExperts + 1];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  plan_chunks(p.offsets, p.E, kBf16ChunkRows, offs, chunk_start);
  if (offs[p.E] > p.max_sel) __trap();
  const int n_chunks = chunk_start[p.E], tiles_per_mat = p.N / kWarps, pieces = p.K / 8;
  const int n_items = n_chunks * tiles_per_mat * p.n_mats;
  for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
    const L::GroupedItem it =
        L::decode_item(item, n_chunks, chunk_start, p.E, offs, kBf16ChunkRows, tiles_per_mat, kWarps);
    const int n = it.n0 + warp;  // < N: N % kWarps == 0
    const __nv_bfloat16* w_row = pick(p.w, it.mat) + (int64_t(it.expert) * p.N + n) * p.K;
    const __nv_bfloat16* x_rows[kBf16ChunkRows];
#pragma unroll
    for (int r = 0; r < kBf16ChunkRows; ++r) {
      const int j = it.j0 + min(r, it.n_tok - 1);  // rows past n_tok repeat the last (not stored)
      x_rows[r] = p.x + int64_t(p.x_row ? p.x_row[j] : j) * p.K;
    }
    float acc[kBf16ChunkRows];
#pragma unroll
    for (int r = 0; r < kBf16ChunkRows; ++r) acc[r] = 0.0f;
    for (int c0 = lane; c0 < pieces; c0 += kWarpSize * kBf16Unroll) {
      uint4 wv[kBf16Unroll];
#pragma unroll
      for (int u = 0; u < kBf16Unroll; ++u) {
        const int c = c0 + u * kWarpSize;
        if (c < pieces) wv[u] = load_stream(w_row + int64_t(c) * 8);
      }
#pragma unroll
      for (int u = 0; u < kBf16Unroll; ++u) {
        const int c = c0 + u * kWarpSize;
        if (c >= pieces) break;
#pragma unroll
        for (int r = 0; r < kBf16ChunkRows; ++r)
          if (r < it.n_tok) acc[r] = __fadd_rn(acc[r], dot8_bf16(wv[u], __ldg(reinterpret_cast<const uint4*>(x_rows[r]) + c)));
      }
    }
    __nv_bfloat16* y = pick(p.y, it.mat);
#pragma unroll
    for (int r = 0; r < kBf16ChunkRows; ++r) {
      const float v = warp_sum(acc[r]);
      if (lane == 0 && r < it.n_tok) y[int64_t(it.j0 + r) * p.N + n] = __float2bfloat16_rn(v);
    }
  }
}

template <Fmt kFmt, class S, bool kOutF32>
void launch_shape(const MoeGroupedParams& p, cudaStream_t stream) {
  const void* kernel = reinterpret_cast<const void*>(grouped_fp4_kernel<kFmt, S, kOutF32>);
  static ResidentGrid record;
  const int grid_max = resident_blocks(record, kernel, kThreads, S::kSmemBytes);
  // At most one item per block: chunks <= E + max_sel / R.
  const int64_t max_items = (int64_t(p.E) + p.max_sel / S::kChunkRows) * (p.N / kTileN) * p.n_mats;
  const int grid = int(std::max<int64_t>(1, std::min<int64_t>(grid_max, max_items)));
  launch_kernel(grouped_fp4_kernel<kFmt, S, kOutF32>, grid, kThreads, S::kSmemBytes, stream, p);
}

// Launch-shape heuristic (a host value, never the device counts): up to 16 grouped rows per
// expert on average is batched decode — 8-row chunks keep the weight stream deep; more is
// prefill — 64-row chunks read each weight tile once per 64 rows. Below kFewRows selections
// (batch 1–5 at k = 6) the decode launch keeps two blocks per SM (see Shape), and so does NVFP4
// always: at three blocks per SM its decode kernel spills 64 bytes per lane inside the K loop.
constexpr int kDecodeRowsPerExpert = 16;
constexpr int kFewRows = 32;
using DecodeFewShape = Shape<1, 2, true, 2>;
using DecodeShape = Shape<1, 2, true, 3>;
using PrefillShape = Shape<8, 2, false, 1>;

template <Fmt kFmt, bool kOutF32>
void launch_format(const MoeGroupedParams& p, cudaStream_t stream) {
  if (grouped_launch_uses_fp8_tensor_cores(p))
    launch_moe_grouped_wgmma(p, stream);
  else if (kFmt == Fmt::kNVFP4 || p.max_sel < kFewRows)
    launch_shape<kFmt, DecodeFewShape, kOutF32>(p, stream);
  else if (!grouped_prefill_shaped(p.max_sel, p.E))
    launch_shape<kFmt, DecodeShape, kOutF32>(p, stream);
  else
    launch_shape<kFmt, PrefillShape, kOutF32>(p, stream);
}

}  // namespace

bool grouped_prefill_shaped(int64_t max_sel, int E) { return max_sel > int64_t(kDecodeRowsPerExpert) * E; }

bool grouped_launch_uses_fp8_tensor_cores(const MoeGroupedParams& p) {
  return p.fp8_rows && p.format == Fmt::kMXFP4;
}

void launch_moe_grouped_gemm(const MoeGroupedParams& p, cudaStream_t stream) {
  DSV4_CHECK_MSG(p.n_mats == 1 || p.n_mats == 2, "moe_grouped_gemm: n_mats=", p.n_mats);
  DSV4_CHECK_MSG(p.E >= 1 && p.E <= kGroupedMaxExperts, "moe_grouped_gemm: E=", p.E);
  DSV4_CHECK_MSG(p.N > 0 && p.N % kTileN == 0, "moe_grouped_gemm: N=", p.N, " is not a multiple of ", kTileN);
  DSV4_CHECK_MSG(p.K > 0 && p.K % L::kGroupK == 0, "moe_grouped_gemm: K=", p.K, " is not a multiple of ", L::kGroupK);
  DSV4_CHECK_MSG(p.max_sel >= 0, "moe_grouped_gemm: max_sel=", p.max_sel);
  if (p.max_sel == 0) return;
  const bool nv = p.format == Fmt::kNVFP4;
  DSV4_CHECK_MSG(nv || p.format == Fmt::kMXFP4, "moe_grouped_gemm: format=", int(p.format));
  DSV4_CHECK(p.x && p.x_scale && p.offsets);
  DSV4_CHECK(reinterpret_cast<uintptr_t>(p.x) % 16 == 0);
  for (int m = 0; m < p.n_mats; ++m) {
    DSV4_CHECK_MSG(p.w[m] && p.w_scale[m] && p.y[m] && (!nv || p.global_scale[m]), "moe_grouped_gemm: tensor ", m);
    DSV4_CHECK(reinterpret_cast<uintptr_t>(p.w[m]) % 16 == 0 &&
               reinterpret_cast<uintptr_t>(p.w_scale[m]) % (nv ? 8 : 4) == 0);
  }
  DSV4_CHECK_MSG(int64_t(p.max_sel) * std::max(p.N, p.K) < INT32_MAX * int64_t(64),
                 "moe_grouped_gemm: max_sel=", p.max_sel);
  if (nv)
    p.out_f32 ? launch_format<Fmt::kNVFP4, true>(p, stream) : launch_format<Fmt::kNVFP4, false>(p, stream);
  else
    p.out_f32 ? launch_format<Fmt::kMXFP4, true>(p, stream) : launch_format<Fmt::kMXFP4, false>(p, stream);
}

void launch_moe_grouped_bf16(const MoeGroupedBf16Params& p, cudaStream_t stream) {
  DSV4_CHECK_MSG(p.n_mats == 1 || p.n_mats == 2, "moe_grouped_bf16: n_mats=", p.n_mats);
  DSV4_CHECK_MSG(p.E >= 1 && p.E <= kGroupedMaxExperts, "moe_grouped_bf16: E=", p.E);
  DSV4_CHECK_MSG(p.N > 0 && p.N % kWarps == 0 && p.K > 0 && p.K % 8 == 0, "moe_grouped_bf16: N=", p.N, " K=", p.K);
  DSV4_CHECK_MSG(p.max_sel >= 0, "moe_grouped_bf16: max_sel=", p.max_sel);
  if (p.max_sel == 0) return;
  DSV4_CHECK(p.x && p.offsets && reinterpret_cast<uintptr_t>(p.x) % 16 == 0);
  for (int m = 0; m < p.n_mats; ++m)
    DSV4_CHECK_MSG(p.w[m] && p.y[m] && reinterpret_cast<uintptr_t>(p.w[m]) % 16 == 0, "moe_grouped_bf16: tensor ", m);
  static ResidentGrid record;
  const int grid_max = resident_blocks(record, reinterpret_cast<const void*>(grouped_bf16_kernel), kThreads, 0);
  const int64_t max_items = (int64_t(p.E) + p.max_sel / kBf16ChunkRows) * (p.N / kWarps) * p.n_mats;
  const int grid = int(std::max<int64_t>(1, std::min<int64_t>(grid_max, max_items)));
  launch_kernel(grouped_bf16_kernel, grid, kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
