// The grouped MXFP4 expert GEMM on FP8 tensor cores; see moe_grouped_wgmma.cuh for the
// arithmetic and the operand layout.
//
// A persistent grid walks the items of moe_grouped_gemm.cu's kernels (≤ 128 tokens of one expert
// × 128 weight rows of one tensor), here as one flat sequence of steps (item, K group of 128
// columns) per block, so that the cp.async pipeline (kStages − 2 steps in flight) runs on across
// item boundaries. Per step every thread copies its share of the step into shared memory (the
// tokens' E4M3 columns, swizzled; the tile's nibbles and scale words; the tokens' activation
// scales through a register), and each warpgroup builds its A registers for the four k32 blocks
// from the nibbles and its rows' fold tables and issues four chained m64n64k32 wgmmas per 64
// tokens (predicated off for a second 64 the item lacks). While they run it promotes the
// previous step's sums in FP32 from a second accumulator set. One __syncthreads per step.
#include "cuda/kernels/moe_grouped_wgmma.cuh"

#include <cuda_bf16.h>

#include <algorithm>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"
#include "cuda/kernels/moe_grouped_work.cuh"
#include "cuda/kernels/wgmma_ptx.cuh"

namespace dsv4::cuda {
namespace {

namespace L = moe_gemm_layout;
namespace W = moe_wgmma_layout;
using moe_grouped_work::pick;
using moe_grouped_work::plan_chunks;
using namespace wgmma_ptx;

constexpr int kThreads = 256;  // two warpgroups
constexpr int kTileN = 128;    // weight rows per item, 64 per warpgroup
constexpr int kGroupK = L::kGroupK;
// Nibble rows of 64 bytes padded to 80: a warp's A reads (8 rows × 2 words) then hit 16 distinct
// banks instead of 4-way conflicts at a 64-byte stride.
constexpr int kWRowBytes = 80;
static_assert(kGroupK == 128 && L::kBlockK == 32, "a step is 128 columns: one swizzle row, four k32 blocks");

// The item: kTokens tokens × 128 weight rows, with kStages stages (kStages − 2 loading, one in
// the tensor core, one being promoted) and at least kMinBlocks blocks per SM.
//  - PrefillShape: 128 tokens (two n64 wgmma halves per k32 block; the second is predicated off
//    when an item has <= 64 tokens); one block per SM (255 registers, no spills).
//  - DecodeShape: 8 tokens (one n8 wgmma per k32 block), for launches of a few rows per expert;
//    a stage is 12 KiB, so two blocks per SM keep 2 × 6 stages of weights in flight.
//    It reads the weights at 45 % of copy at batch 64 on an H100 against the F16 decode kernel's
//    64 % (bench/results/2026-12-05-h100-fold-and-wgmma-skinny.md), so only
//    CudaOptions::fp8_expert_decode sends decode rows here.
template <int kTokens_, int kStages_, int kMinBlocks_>
struct Shape {
  static constexpr int kTokens = kTokens_;
  static constexpr int kStages = kStages_;
  static constexpr int kMinBlocks = kMinBlocks_;
  static constexpr int kN = kTokens < 64 ? kTokens : 64;  // the wgmma's n
  static constexpr int kHalves = kTokens / kN;
  static constexpr int kAcc = kN / 2;  // D fragment floats per thread per half
  // One stage: tokens [kTokens][128] E4M3 (swizzled, 1024-byte aligned), nibbles [128][80],
  // weight scale words [128] (4 UE8M0 each), activation scales [kTokens] FP32; padded to 1024.
  static constexpr int kXBytes = kTokens * kGroupK;
  static constexpr int kWOffset = kXBytes, kWsOffset = kWOffset + kTileN * kWRowBytes;
  static constexpr int kSxOffset = kWsOffset + kTileN * 4;
  static constexpr int kStageBytes = (kSxOffset + kTokens * 4 + 1023) / 1024 * 1024;
  // Shared memory: slack to align the stages to 1024 bytes, the stages, the plan's offsets and
  // chunk starts [E + 1] each, the fold tables [kFoldDepths][8] bytes.
  static constexpr size_t kSmemBytes =
      1024 + size_t(kStages) * kStageBytes + size_t(2) * (kGroupedMaxExperts + 1) * 4 + W::kFoldDepths * 8;
  // 16-byte token chunks per loading thread and step; the first kXLoaders threads load them.
  static constexpr int kXChunksPerThread = kTokens * 8 >= kThreads ? kTokens * 8 / kThreads : 1;
  static constexpr int kXLoaders = kTokens * 8 / kXChunksPerThread;
  static_assert(kTokens % 8 == 0 && kTokens <= kTileN && (kTokens <= 64 || kTokens % 64 == 0), "wgmma n: 8..64, or 64-token halves");
  static_assert(kTokens * 8 % kXChunksPerThread == 0 && kXChunksPerThread <= 8, "whole token chunks per thread");
  static_assert(kTileN * 2 == kThreads, "the second warpgroup's threads load the tokens' activation scales");
  static_assert(kStages >= 3, "one stage loading, one in the tensor core, one being promoted");
};
using PrefillShape = Shape<128, 5, 1>;
using DecodeShape = Shape<8, 8, 2>;

// d = A·B + (accumulate ? d : 0), m64nNk32 (N = 64 or 8), E4M3 × E4M3 -> FP32, A in registers
// (a0/a1: rows g / g + 8 at columns 4q..4q+3, a2/a3 the same rows at 16 + 4q..); a no-op unless
// live (a guard predicate, not a branch: see the main loop).
template <int N>
__device__ __forceinline__ void wgmma_m64k32(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b, bool accumulate,
                                             bool live) {
  static_assert(N == 64 || N == 8, "the two shapes' n");
  if constexpr (N == 64) {
    asm volatile(
        "{\n.reg .pred p, l;\nsetp.ne.b32 p, %37, 0;\nsetp.ne.b32 l, %38, 0;\n"
        "@l wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
          "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
          "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
          "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(int(accumulate)), "r"(int(live))
        : "memory");
  } else {
    asm volatile(
        "{\n.reg .pred p, l;\nsetp.ne.b32 p, %9, 0;\nsetp.ne.b32 l, %10, 0;\n"
        "@l wgmma.mma_async.sync.aligned.m64n8k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, %8, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(int(accumulate)), "r"(int(live))
        : "memory");
  }
}

template <class S, bool kOutF32>
__global__ void __launch_bounds__(kThreads, S::kMinBlocks) grouped_mxfp4_wgmma_kernel(MoeGroupedParams p) {
  constexpr int kStages = S::kStages;
  wait_for_prior_grids();
  extern __shared__ uint8_t smem_raw[];
  // The stages start on a 1024-byte boundary of the shared window (the swizzle atom).
  uint8_t* stages = smem_raw + ((1024 - (shared_address(smem_raw) & 1023)) & 1023);
  int* offs = reinterpret_cast<int*>(stages + size_t(kStages) * S::kStageBytes);  // [E + 1]
  int* chunk_start = offs + (kGroupedMaxExperts + 1);                              // [E + 1]
  uint8_t* fold_table = reinterpret_cast<uint8_t*>(chunk_start + (kGroupedMaxExperts + 1));  // [depth][code]

  const int tid = threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int wg = warp / 4, g = lane / 4, q = lane % 4;
  const int E = p.E, N = p.N, K = p.K, n_groups = K / kGroupK;
  const int tiles_per_mat = N / kTileN;

  // Entry (d, c): the E4M3 byte of e2m1(c)·2^(6 − d), rounded to nearest even (exact for d <= 14).
  for (int i = tid; i < W::kFoldDepths * 8; i += kThreads) {
    const int d = i / 8, c = i % 8, e = c >> 1, m = c & 1;
    const float e2m1 = e == 0 ? 0.5f * m : ldexpf(1.0f + 0.5f * m, e - 1);
    fold_table[i] = float_to_e4m3(ldexpf(e2m1, W::kFoldTop - d));
  }
  __syncthreads();  // the tables, before any thread's first step
  plan_chunks(p.offsets, E, S::kTokens, offs, chunk_start);
  if (offs[E] > p.max_sel) __trap();  // the plan holds more rows than the launch was shaped for
  const int n_chunks = chunk_start[E];
  const int n_items = n_chunks * tiles_per_mat * p.n_mats;
  const int my_items = int(blockIdx.x) < n_items ? (n_items - 1 - int(blockIdx.x)) / int(gridDim.x) + 1 : 0;
  const int n_steps = my_items * n_groups;
  const auto item_at = [&](int k) {
    return L::decode_item(int(blockIdx.x) + k * int(gridDim.x), n_chunks, chunk_start, E, offs, S::kTokens,
                          tiles_per_mat, kTileN);
  };
  const auto x_row_of = [&](const L::GroupedItem& it, int t) {
    return t < it.n_tok ? (p.x_row ? p.x_row[it.j0 + t] : it.j0 + t) : -1;
  };

  // ---- Loads. Per step, thread tid copies: threads < kXLoaders, chunks x_chunk0 .. +
  // kXChunksPerThread − 1 (16 bytes each) of token x_tok; chunks 2·(tid%2), +1 of nibble row
  // tid/2; threads < 128 weight row tid's scale word, threads 128 .. 128 + kTokens − 1 token
  // (tid − 128)'s activation scale byte, loaded into a register and converted and stored one step
  // later (converting it at once would wait for the load, every step: the ncu profile's largest
  // stall, bench/results/2026-12-05-h100-fold-and-wgmma-skinny.md). The steps are loaded in order,
  // so the loader keeps its own item, K group and stage counters (a division by n_groups per step
  // cost ≈ 30 instructions).
  constexpr int kXChunksPerThread = S::kXChunksPerThread;
  const bool x_loader = tid < S::kXLoaders, sx_loader = tid >= kTileN && tid - kTileN < S::kTokens;
  const int x_tok = tid * kXChunksPerThread / 8, x_chunk0 = tid * kXChunksPerThread % 8;
  int load_item = 0, load_group = 0, load_stage = 0;  // the next step to load
  const uint8_t* x_src = nullptr;   // this thread's token row at the group (nullptr: past the item's tokens)
  const uint8_t* w_src = nullptr;   // this thread's nibble row at the group
  const uint8_t* ws_src = nullptr;  // threads < 128: its weight row's scale bytes at the group
  const uint8_t* sx_src = nullptr;  // sx_loader: its token's scale bytes at the group (nullptr: none)
  constexpr uint32_t kNoScale = 0x100;  // sx_raw for a token past the item's: stored as 0
  uint32_t sx_raw = kNoScale;
  int sx_slot = -1;
  // The activation scale loaded by the last load_step, into its stage: the step that last read
  // that stage finished before the barrier that preceded the load, so the stage is free.
  const auto flush_sx = [&] {
    if (sx_slot >= 0) {
      reinterpret_cast<float*>(stages + sx_slot * S::kStageBytes + S::kSxOffset)[tid - kTileN] =
          sx_raw == kNoScale ? 0.0f : e8m0_to_float_select(sx_raw);
      sx_slot = -1;
    }
  };
  const auto load_step = [&] {
    flush_sx();
    if (load_item < my_items) {
      if (load_group == 0) {
        const L::GroupedItem it = item_at(load_item);
        const int xr = x_row_of(it, x_tok);
        x_src = xr >= 0 ? p.x + int64_t(xr) * K : nullptr;
        const int64_t w_row = int64_t(it.expert) * N + it.n0 + tid / 2;
        w_src = pick(p.w, it.mat) + w_row * (K / 2);
        if (tid < kTileN) {
          ws_src = pick(p.w_scale, it.mat) + (int64_t(it.expert) * N + it.n0 + tid) * (K / kMXFP4BlockSize);
        } else if (sx_loader) {
          const int sx_row = x_row_of(it, tid - kTileN);
          sx_src = sx_row >= 0 ? p.x_scale + int64_t(sx_row) * n_groups : nullptr;
        }
      }
      uint8_t* st = stages + load_stage * S::kStageBytes;
      if (x_loader) {
#pragma unroll
        for (int i = 0; i < kXChunksPerThread; ++i) {
          const int c = x_chunk0 + i;
          cp_async16(shared_address(st + swizzled_chunk(x_tok, c)), x_src ? x_src + c * 16 : p.x, x_src != nullptr);
        }
      }
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int c = (tid % 2) * 2 + i;
        cp_async16(shared_address(st + S::kWOffset + (tid / 2) * kWRowBytes + c * 16), w_src + c * 16, true);
      }
      if (tid < kTileN) {
        cp_async4(shared_address(st + S::kWsOffset + tid * 4), ws_src);
        ws_src += 4;
      } else if (sx_loader) {
        sx_raw = sx_src ? *sx_src : kNoScale;
        if (sx_src) ++sx_src;
        sx_slot = load_stage;
      }
      if (x_src) x_src += kGroupK;
      w_src += kGroupK / 2;
      load_stage = load_stage + 1 == kStages ? 0 : load_stage + 1;
      if (++load_group == n_groups) {
        load_group = 0;
        ++load_item;
      }
    }
    cp_async_commit();  // one group per step, empty or not: the wait counts stay uniform
  };

  // ---- Compute state. pr[P][h]: the wgmma sums of a step of parity P for tokens kN·h .. (D
  // fragment: element 4j + c = row g + 8·(c/2), token 8j + 2q + c%2); acc: the item's FP32
  // totals. The two parities let step s's wgmmas run while step s − 1's sums are promoted.
  constexpr int kH = S::kHalves, kA = S::kAcc;
  float pr[2][kH][kA], acc[kH][kA];
#pragma unroll
  for (int P = 0; P < 2; ++P)
#pragma unroll
    for (int h = 0; h < kH; ++h)
#pragma unroll
      for (int i = 0; i < kA; ++i) pr[P][h][i] = 0.0f;
#pragma unroll
  for (int h = 0; h < kH; ++h)
#pragma unroll
    for (int i = 0; i < kA; ++i) acc[h][i] = 0.0f;
  const int row_in_tile = wg * 64 + (warp % 4) * 16 + g;  // this lane's rows: row_in_tile, +8
  const int half = q & 1;
  const uint2* tables = reinterpret_cast<const uint2*>(fold_table);
  int cur_item = 0, cur_group = 0, cur_stage = 0;  // the step being issued (counters, as the loader's)
  L::GroupedItem it{};
  // The step being promoted: its item, K group, live halves, row scales and stage.
  L::GroupedItem done_it{};
  int done_group = -1, done_live = 0;  // none yet
  float done_sw[2] = {0.0f, 0.0f};
  const float* done_sx = nullptr;

  // Step s's wgmmas into pr[P] (P = s % 2, a compile-time index).
  const auto issue = [&](auto parity, const uint8_t* st, int n_live, const uint32_t (&depths)[2]) {
    constexpr int P = decltype(parity)::value;
    const uint32_t x_tile = shared_address(st);
    const uint8_t* nib0 = st + S::kWOffset + row_in_tile * kWRowBytes + 4 * (q >> 1);
    const uint8_t* nib1 = nib0 + 8 * kWRowBytes;
    // A registers per block: columns 4q.. (word q/2 of the block) and 16 + 4q.. (word 2 + q/2),
    // half q%2, through the row's table for the block's depth.
    uint32_t a[L::kBlocks][4];
#pragma unroll
    for (int b = 0; b < L::kBlocks; ++b) {
      const uint2 t0 = tables[(depths[0] >> (8 * b)) & 0xffu], t1 = tables[(depths[1] >> (8 * b)) & 0xffu];
      a[b][0] = W::e2m1x4_to_e4m3x4(*reinterpret_cast<const uint32_t*>(nib0 + 16 * b), half, t0.x, t0.y);
      a[b][1] = W::e2m1x4_to_e4m3x4(*reinterpret_cast<const uint32_t*>(nib1 + 16 * b), half, t1.x, t1.y);
      a[b][2] = W::e2m1x4_to_e4m3x4(*reinterpret_cast<const uint32_t*>(nib0 + 16 * b + 8), half, t0.x, t0.y);
      a[b][3] = W::e2m1x4_to_e4m3x4(*reinterpret_cast<const uint32_t*>(nib1 + 16 * b + 8), half, t1.x, t1.y);
    }
    wgmma_fence();
#pragma unroll
    for (int h = 0; h < kH; ++h)
#pragma unroll
      for (int b = 0; b < L::kBlocks; ++b)
        wgmma_m64k32<S::kN>(pr[P][h], a[b], sw128_descriptor(x_tile + h * S::kN * kGroupK + 32 * b), b > 0, h < n_live);
    wgmma_commit();
  };
  // The done step's sums (parity P, already waited for): × 2^(t−127) of the row and s_x of the
  // token (powers of two: their product is exact within FP32's range), into the totals; at the
  // item's last group, its outputs (undoing the fold's 2^6, exact).
  // The totals start at zero and are cleared after an item's outputs are written, in that rare
  // branch: a test for the first group here compiled to 64 FSELs on every step.
  const auto promote = [&](auto parity) {
    constexpr int P = decltype(parity)::value;
#pragma unroll
    for (int h = 0; h < kH; ++h) {
      if (h < done_live) {
#pragma unroll
        for (int j = 0; j < kA / 4; ++j) {
          const float2 s2 = *reinterpret_cast<const float2*>(done_sx + h * S::kN + 8 * j + 2 * q);
#pragma unroll
          for (int c = 0; c < 4; ++c)
            acc[h][4 * j + c] = __fmaf_rn(pr[P][h][4 * j + c], __fmul_rn(done_sw[c >> 1], (c & 1) ? s2.y : s2.x),
                                          acc[h][4 * j + c]);
        }
      }
    }
    if (done_group == n_groups - 1) {
      void* y = pick(p.y, done_it.mat);
#pragma unroll
      for (int h = 0; h < kH; ++h)
#pragma unroll
        for (int j = 0; j < kA / 4; ++j)
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int tok = h * S::kN + 8 * j + 2 * q + (c & 1);
            if (tok < done_it.n_tok) {
              const float v = __fmul_rn(acc[h][4 * j + c], W::kFoldedOutputScale);
              const int64_t at = int64_t(done_it.j0 + tok) * N + done_it.n0 + row_in_tile + 8 * (c >> 1);
              if constexpr (kOutF32)
                static_cast<float*>(y)[at] = v;
              else
                static_cast<__nv_bfloat16*>(y)[at] = __float2bfloat16_rn(v);
            }
            acc[h][4 * j + c] = 0.0f;
          }
    }
  };
  constexpr std::integral_constant<int, 0> kEven{};
  constexpr std::integral_constant<int, 1> kOdd{};

#pragma unroll 1
  for (int s = 0; s < kStages - 2; ++s) load_step();

  // Step s of parity P: issue its wgmmas, then promote step s − 1's once they are done. A stage
  // is refilled two steps after it was read (load_step(s + kStages − 2) writes step s − 2's
  // stage): step s − 2's wgmmas were waited for in step s − 1, before every thread passed this
  // step's barrier, and step s − 1's stage (its tokens in flight, its s_x to promote) stays
  // untouched. The steps run in pairs, each pair straight-line code: with a wgmma or its wait
  // inside a branch ptxas serialises every wgmma of the kernel (C7514 / C7520 at -Xptxas -v).
  // So an odd count gets one empty step at the end: no copies, no live half, nothing to promote.
  const auto step = [&](auto parity, int s) {
    constexpr int P = decltype(parity)::value;
    flush_sx();                    // step s + kStages − 3's s_x, promoted in step s + kStages − 2
    cp_async_wait<kStages - 3>();  // this thread's copies of step s have landed
    fence_proxy_async();
    __syncthreads();               // everyone's have; and step s − 2's stage is free
    load_step();  // step s + kStages − 2
    int n_live = 0;  // halves with a real token (warpgroup-uniform); the first always has one
    const bool real = s < n_steps;
    const int group = cur_group;
    if (real) {
      if (group == 0) it = item_at(cur_item);
      n_live = (it.n_tok + S::kN - 1) / S::kN;
      if (++cur_group == n_groups) {
        cur_group = 0;
        ++cur_item;
      }
    }
    const uint8_t* st = stages + cur_stage * S::kStageBytes;
    cur_stage = cur_stage + 1 == kStages ? 0 : cur_stage + 1;
    uint32_t top[2];
    const uint32_t depths[2] = {
        W::fold_depths(*reinterpret_cast<const uint32_t*>(st + S::kWsOffset + row_in_tile * 4), top[0]),
        W::fold_depths(*reinterpret_cast<const uint32_t*>(st + S::kWsOffset + (row_in_tile + 8) * 4), top[1])};
    issue(parity, st, n_live, depths);
    wgmma_wait<1>();
    promote(std::integral_constant<int, 1 - P>{});
    done_it = it;
    done_group = real ? group : -1;
    done_live = n_live;
    done_sw[0] = e8m0_to_float_select(top[0]);
    done_sw[1] = e8m0_to_float_select(top[1]);
    done_sx = reinterpret_cast<const float*>(st + S::kSxOffset);
  };
#pragma unroll 1
  for (int s = 0; s < n_steps; s += 2) {
    step(kEven, s);
    step(kOdd, s + 1);
  }
  wgmma_wait<0>();
  promote(kOdd);
  cp_async_wait<0>();  // no copy outlives the block
}

template <class S, bool kOutF32>
void launch_shaped(const MoeGroupedParams& p, cudaStream_t stream) {
  static ResidentGrid record;
  const void* kernel = reinterpret_cast<const void*>(grouped_mxfp4_wgmma_kernel<S, kOutF32>);
  const int grid_max = resident_blocks(record, kernel, kThreads, S::kSmemBytes);
  // At most one item per block: chunks <= E + max_sel / kTokens.
  const int64_t max_items = (int64_t(p.E) + p.max_sel / S::kTokens) * (p.N / kTileN) * p.n_mats;
  const int grid = int(std::max<int64_t>(1, std::min<int64_t>(grid_max, max_items)));
  launch_kernel(grouped_mxfp4_wgmma_kernel<S, kOutF32>, grid, kThreads, S::kSmemBytes, stream, p);
}

// The shape follows the launch's rows per expert (a host value, never the device counts), as the
// F16 kernels' does; a row's sums are the same in either shape (the batch-invariance note).
template <bool kOutF32>
void launch_typed(const MoeGroupedParams& p, cudaStream_t stream) {
  if (grouped_prefill_shaped(p.max_sel, p.E))
    launch_shaped<PrefillShape, kOutF32>(p, stream);
  else
    launch_shaped<DecodeShape, kOutF32>(p, stream);
}

}  // namespace

void launch_moe_grouped_wgmma(const MoeGroupedParams& p, cudaStream_t stream) {
  DSV4_CHECK_MSG(p.format == ExpertWeightFormat::kMXFP4, "moe_grouped_wgmma: MXFP4 experts only");
  p.out_f32 ? launch_typed<true>(p, stream) : launch_typed<false>(p, stream);
}

}  // namespace dsv4::cuda
