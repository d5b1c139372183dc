// Skinny tensor-core GEMM kernel and launcher; see skinny_gemm.cuh for the contract and the
// register layout. A warp streams its 32 weight rows one 128-byte K unit at a time (eight 16-byte
// loads per lane in flight, bypassing L1) and feeds them, once, to MMAs against every 8-row tile
// of x in its pass (up to 64 rows); the passes over the same weights run side by side, so HBM
// serves the weights about once and L2 the other passes. K is split over the warps of a block and
// over the blocks of a cluster (skinny_split); the partial sums meet in shared memory, then in
// the cluster leader through distributed shared memory, always in the same order.
#include "cuda/kernels/skinny_gemm.cuh"

#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include <atomic>
#include <climits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/gemv_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

namespace cg = cooperative_groups;
namespace L = skinny_layout;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kWarpRows = 32;       // weight rows per warp: two m16 A tiles
constexpr int kTileCols = 8;        // rows of x per MMA B tile (the MMA's n = 8)
constexpr int kMaxTiles = 8;        // B tiles of the widest pass: 64 rows of x
constexpr int kMaxSplit = 64;       // 8 warps × a cluster of 8 (the portable cluster limit)
constexpr int kMaxCluster = 8;
constexpr int kTargetWarps = 2048;  // warps streaming at once: ~16 per SM on 132 SMs keeps HBM busy
static_assert(kFP8BlockSize == L::kUnitBytes, "an FP8 unit is one 128-wide scale block of K");
static_assert(kWarpRows % 32 == 0 && kFP8BlockSize % kWarpRows == 0, "a warp's rows share one scale row");

// D += A·B, m16n8k16, F16 × F16 → FP32 (PTX ISA "mma.m16n8k16" fragment layout).
__device__ __forceinline__ void mma_f16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two E4M3 bytes (low = first) → two F16 (low = first): the hardware conversion, exact.
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t pair) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(pair & 0xffffu), __NV_E4M3);
  return uint32_t(h.x) | (uint32_t(h.y) << 16);
}

// Two E4M3 bytes → two BF16, exactly: every F16 the exact E4M3 → F16 conversion yields is zero or
// normal with at most 4 significant bits, so BF16 = sign | (F16 exponent + (127 − 15)) | top 7
// mantissa bits.
__device__ __forceinline__ uint32_t e4m3x2_to_bf16x2(uint32_t pair) {
  const uint32_t f16x2 = e4m3x2_to_f16x2(pair);
  const uint32_t mag = (f16x2 >> 3) & 0x0fff0fffu;  // per half: exponent(5) | mantissa top 7
  constexpr uint32_t kRebias = uint32_t(127 - 15) << 7;
  return (f16x2 & 0x80008000u) | (mag + ((kRebias | (kRebias << 16)) & __vcmpne2(mag, 0u)));
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

template <SkinnyKind kKind>
struct KindTraits {
  static constexpr bool kWeightScaled = kKind != SkinnyKind::kBf16;   // per-unit partial × s_w
  static constexpr bool kActScaled = kKind == SkinnyKind::kFp8;       // × s_x as well
  static constexpr int kXBytes = kKind == SkinnyKind::kFp8 ? 1 : 2;   // x element size
  static constexpr int kWBytes = kKind == SkinnyKind::kBf16 ? 2 : 1;  // weight element size
  static constexpr int kXChunks = kKind == SkinnyKind::kFp8AsBf16 ? 2 : 1;  // x chunks per weight chunk
  static constexpr int kSteps = kKind == SkinnyKind::kFp8AsBf16 ? 4 : 2;    // MMAs per weight chunk
  static constexpr int kUnitK = L::kUnitBytes / kWBytes;                     // K values per unit
};

// grid: x = row blocks × passes × cluster (cluster fastest, then pass), where a pass covers up to
// kTiles·8 rows of x. The passes over one weight row block are neighbours in launch order, so they
// stream the same weights at the same time: HBM serves the first, L2 the others.
// Dynamic shared memory: kWarps × 2·kTiles·4 floats × 32 lanes (the split-K exchange).
// Blocks per SM the register budget must allow: decode shapes (1–2 B tiles) need several blocks
// per SM for enough loads in flight; 4–8 tiles carry 64–128 accumulators per lane.
constexpr int min_blocks_for(int tiles) { return tiles <= 2 ? 2 : 1; }

template <SkinnyKind kKind, int kTiles, bool kOutBf16>
__global__ void __launch_bounds__(kThreads, min_blocks_for(kTiles))
    skinny_gemm_kernel(SkinnyGemmParams p, SkinnySplit sp, int passes) {
  wait_for_prior_grids();
  using T = KindTraits<kKind>;
  constexpr int kRegs = 2 * kTiles * 4;  // accumulator floats per lane: 2 A tiles × kTiles × 4
  extern __shared__ float exchange[];    // [kWarps][kRegs][32]

  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const int kw = warp % sp.k_warps, rw = warp / sp.k_warps, row_warps = kWarps / sp.k_warps;
  const int rank = int(blockIdx.x) % sp.cluster, pass = int(blockIdx.x) / sp.cluster % passes;
  const int row_block = int(blockIdx.x) / sp.cluster / passes;
  const int n0 = (row_block * row_warps + rw) * kWarpRows;  // first weight row of this warp
  const int n_split = sp.n_split(), split = rank * sp.k_warps + kw;
  const int m0 = pass * kTiles * kTileCols;
  const int64_t w_row_bytes = int64_t(p.K) * T::kWBytes;
  const int n_units = int(w_row_bytes / L::kUnitBytes), n_kb = p.K / int(kFP8BlockSize);
  const bool warp_valid = n0 < p.N;

  // This lane's weight rows n0 + g + 8i (chunk_row) and rows of x m0 + 8j + g (B tile j, column g).
  const uint8_t* w_row[4];
  bool w_ok[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int n = n0 + L::chunk_row(lane, i);
    w_ok[i] = n < p.N;
    w_row[i] = static_cast<const uint8_t*>(p.w) + int64_t(w_ok[i] ? n : 0) * w_row_bytes;
  }
  const int64_t ldx_bytes = p.ldx * T::kXBytes;
  const int64_t x_off = p.rows_per_group > 0 ? int64_t(n0 / p.rows_per_group) * p.group_stride * T::kXBytes : 0;
  // Row m0 + g of x; B tile j reads row m0 + 8j + g (never past M: padding columns are zeros).
  const uint8_t* x_base = static_cast<const uint8_t*>(p.x) + int64_t(m0 + g) * ldx_bytes + x_off;
  const auto x_ok = [&](int j) { return m0 + j * kTileCols + g < p.M; };

  float acc[2][kTiles][4];  // running total per (A tile, B tile, C register)
#pragma unroll
  for (int a = 0; a < 2; ++a)
#pragma unroll
    for (int j = 0; j < kTiles; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[a][j][r] = 0.0f;

  const uint4 zero = make_uint4(0, 0, 0, 0);
  // With 4–8 B tiles the accumulators need the registers: each half's weights are loaded just
  // before its MMAs, and scaled kinds with 8 B tiles sweep one A tile at a time (its own unit
  // sums), re-reading x from L1. Neither changes the order of any element's MMAs (unit, half,
  // step), so every row's arithmetic is the same for every number of B tiles.
  constexpr bool kLoadPerHalf = kTiles >= 4;
  constexpr int kASweep = T::kWeightScaled && kTiles >= 8 ? 1 : 2;  // A tiles per sweep
#pragma unroll 1  // one unit at a time: unrolling would double the live registers
  for (int u = split; warp_valid && u < n_units; u += n_split) {
    const int64_t w_unit = int64_t(u) * L::kUnitBytes, x_unit = int64_t(u) * T::kUnitK * T::kXBytes;
    // Scale bytes of this unit, loaded once the first weight loads are in flight (a scale load
    // ahead of them would put its latency in front of theirs).
    uint32_t sw_byte = 0, sx_byte[kTiles][2];
    const auto load_scales = [&] {
      if constexpr (T::kWeightScaled) {
        sw_byte = p.w_scale[int64_t(n0 / int(kFP8BlockSize)) * n_kb + u];
#pragma unroll
        for (int j = 0; j < kTiles; ++j)
#pragma unroll
          for (int c = 0; c < 2; ++c) {  // C columns 2t, 2t+1 of B tile j
            const int m = m0 + j * kTileCols + 2 * t + c;
            sx_byte[j][c] = T::kActScaled && m < p.M ? p.x_scale[int64_t(m) * n_kb + u] : 0u;
          }
      }
    };
#pragma unroll
    for (int a0 = 0; a0 < 2; a0 += kASweep) {
      uint4 wc[2 * kASweep][2];  // [row 2a (g) / 2a+1 (g+8) of A tile a0+a][half]
      const auto load_half = [&](int h) {
#pragma unroll
        for (int i = 0; i < 2 * kASweep; ++i) {
          const int row = 2 * a0 + i;  // chunk_row(lane, row)
          wc[i][h] = w_ok[row] ? load_stream(w_row[row] + w_unit + L::chunk_byte(lane, h)) : zero;
        }
      };
      if constexpr (!kLoadPerHalf) {  // all loads of the sweep in flight before the first MMA
        load_half(0);
        load_half(1);
      } else {
        load_half(0);
      }
      if (a0 == 0) load_scales();
      float part[kASweep][kTiles][4];  // this unit's sums (scaled kinds) — or the running totals
#pragma unroll
      for (int a = 0; a < kASweep; ++a)
#pragma unroll
        for (int j = 0; j < kTiles; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r) part[a][j][r] = T::kWeightScaled ? 0.0f : acc[a0 + a][j][r];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if constexpr (kLoadPerHalf)
          if (h == 1) load_half(h);
        uint4 xc[kTiles][T::kXChunks];
#pragma unroll
        for (int j = 0; j < kTiles; ++j)
#pragma unroll
          for (int c = 0; c < T::kXChunks; ++c) {
            const int off = kKind == SkinnyKind::kFp8AsBf16 ? L::x_chunk_bytes_fp8_as_bf16(lane, h, c)
                                                            : L::chunk_byte(lane, h);
            const uint8_t* src = x_base + int64_t(j) * kTileCols * ldx_bytes + x_unit + off;
            xc[j][c] = x_ok(j) ? __ldg(reinterpret_cast<const uint4*>(src)) : zero;
          }
#pragma unroll
        for (int s = 0; s < T::kSteps; ++s) {
          if constexpr (kKind == SkinnyKind::kFp8) {
            // sm_90 has no E4M3 mma.sync: ptxas expands an m16n8k32 E4M3 MMA into E4M3 → F16
            // conversions of both operands and two k16 F16 MMAs, MMA by MMA, so the weights were
            // converted again for every B tile. Here each weight word is converted once per unit
            // and each x word once per B tile (wq_b at 64 rows: 39.4 → 32.3 µs on an H200); the
            // arithmetic is the same (exact conversions, two k16 MMAs per 32 K values: HMMA m
            // takes bytes 0–1 and 2–3 of word_of_step(s, m), in A and B alike).
            uint32_t a16[kASweep][2][4];  // [A tile][HMMA][fragment register]
#pragma unroll
            for (int a = 0; a < kASweep; ++a)
#pragma unroll
              for (int m = 0; m < 2; ++m) {
                const uint32_t lo = word(wc[2 * a][h], L::word_of_step(s, m));      // row g
                const uint32_t hi = word(wc[2 * a + 1][h], L::word_of_step(s, m));  // row g + 8
                a16[a][m][0] = e4m3x2_to_f16x2(lo);
                a16[a][m][1] = e4m3x2_to_f16x2(hi);
                a16[a][m][2] = e4m3x2_to_f16x2(lo >> 16);
                a16[a][m][3] = e4m3x2_to_f16x2(hi >> 16);
              }
#pragma unroll
            for (int j = 0; j < kTiles; ++j)
#pragma unroll
              for (int m = 0; m < 2; ++m) {
                const uint32_t xw = word(xc[j][0], L::word_of_step(s, m));
                const uint32_t b0 = e4m3x2_to_f16x2(xw), b1 = e4m3x2_to_f16x2(xw >> 16);
#pragma unroll
                for (int a = 0; a < kASweep; ++a) mma_f16(part[a][j], a16[a][m], b0, b1);
              }
          } else {  // kBf16, kFp8AsBf16: the PTX MMA of the operand type
#pragma unroll
            for (int a = 0; a < kASweep; ++a) {
              uint32_t af[4];
              const uint4& lo = wc[2 * a][h];      // row g of the A tile: a0, a2
              const uint4& hi = wc[2 * a + 1][h];  // row g + 8: a1, a3
              if constexpr (kKind == SkinnyKind::kFp8AsBf16) {
                af[0] = e4m3x2_to_bf16x2(word(lo, s));
                af[2] = e4m3x2_to_bf16x2(word(lo, s) >> 16);
                af[1] = e4m3x2_to_bf16x2(word(hi, s));
                af[3] = e4m3x2_to_bf16x2(word(hi, s) >> 16);
              } else {
                af[0] = word(lo, L::word_of_step(s, 0));
                af[2] = word(lo, L::word_of_step(s, 1));
                af[1] = word(hi, L::word_of_step(s, 0));
                af[3] = word(hi, L::word_of_step(s, 1));
              }
#pragma unroll
              for (int j = 0; j < kTiles; ++j) {
                if constexpr (kKind == SkinnyKind::kBf16) {
                  mma_bf16(part[a][j], af, word(xc[j][0], L::word_of_step(s, 0)), word(xc[j][0], L::word_of_step(s, 1)));
                } else {
                  const uint4& xv = xc[j][s / 2];
                  mma_bf16(part[a][j], af, word(xv, L::word_of_step(s % 2, 0)), word(xv, L::word_of_step(s % 2, 1)));
                }
              }
            }
          }
        }
      }
      // §11.2: Σ_blocks s_x·s_w·(q_x·q_w). The scales are powers of two, so their product is
      // exact; a warp's 32 rows lie in one 128-row scale block.
#pragma unroll
      for (int j = 0; j < kTiles; ++j) {
        float scale[2] = {1.0f, 1.0f};
        if constexpr (T::kWeightScaled) {
          const float sw = e8m0_to_float_select(sw_byte);
#pragma unroll
          for (int c = 0; c < 2; ++c)
            scale[c] = !T::kActScaled ? sw : m0 + j * kTileCols + 2 * t + c < p.M ? sw * e8m0_to_float_select(sx_byte[j][c]) : 0.0f;
        }
#pragma unroll
        for (int a = 0; a < kASweep; ++a)
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            if constexpr (T::kWeightScaled)
              acc[a0 + a][j][r] = fmaf(part[a][j][r], scale[r & 1], acc[a0 + a][j][r]);
            else
              acc[a0 + a][j][r] = part[a][j][r];
          }
      }
    }
  }

  // Split-K exchange, fixed order: split 0 + 1 + … within the block, then cluster ranks 0, 1, ….
  float* mine = exchange + size_t(warp) * kRegs * kWarpSize + lane;  // [reg][lane] slice of this warp
  const auto flat = [](int a, int j, int r) { return (a * kTiles + j) * 4 + r; };
  if (sp.k_warps > 1) {
    if (kw != 0)
#pragma unroll
      for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int j = 0; j < kTiles; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r) mine[flat(a, j, r) * kWarpSize] = acc[a][j][r];
    __syncthreads();
    if (kw == 0)
      for (int o = 1; o < sp.k_warps; ++o) {
        const float* other = mine + size_t(o) * kRegs * kWarpSize;
#pragma unroll
        for (int a = 0; a < 2; ++a)
#pragma unroll
          for (int j = 0; j < kTiles; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[a][j][r] += other[flat(a, j, r) * kWarpSize];
      }
  }
  if (sp.cluster > 1) {
    // Slot of the k-warp-0 warp: untouched by the block exchange above (only kw != 0 wrote).
    cg::cluster_group cluster = cg::this_cluster();
    if (kw == 0 && rank != 0)
#pragma unroll
      for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int j = 0; j < kTiles; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r) mine[flat(a, j, r) * kWarpSize] = acc[a][j][r];
    cluster.sync();
    if (kw == 0 && rank == 0)
      for (int o = 1; o < sp.cluster; ++o) {
        const float* other = cluster.map_shared_rank(mine, o);
#pragma unroll
        for (int a = 0; a < 2; ++a)
#pragma unroll
          for (int j = 0; j < kTiles; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[a][j][r] += other[flat(a, j, r) * kWarpSize];
      }
    cluster.sync();  // no block leaves while the leader still reads its shared memory
  }
  if (!warp_valid || kw != 0 || rank != 0) return;

  // C fragment: registers 0, 1 → weight row g, x rows 2t, 2t+1; registers 2, 3 → row g + 8.
  const int64_t ldy = p.ldy > 0 ? p.ldy : p.N;
#pragma unroll
  for (int a = 0; a < 2; ++a)
#pragma unroll
    for (int j = 0; j < kTiles; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int n = n0 + 16 * a + g + 8 * (r >> 1), m = m0 + j * kTileCols + 2 * t + (r & 1);
        if (n >= p.N || m >= p.M) continue;
        if constexpr (kOutBf16)
          static_cast<__nv_bfloat16*>(p.y)[int64_t(m) * ldy + n] = __float2bfloat16_rn(acc[a][j][r]);
        else
          static_cast<float*>(p.y)[int64_t(m) * ldy + n] = acc[a][j][r];
      }
}

template <SkinnyKind kKind, int kTiles, bool kOutBf16>
void launch_kts(const SkinnyGemmParams& p, SkinnySplit sp, cudaStream_t stream) {
  constexpr int kRegs = 2 * kTiles * 4;
  constexpr size_t kSmem = size_t(kWarps) * kRegs * kWarpSize * sizeof(float);
  auto* kernel = &skinny_gemm_kernel<kKind, kTiles, kOutBf16>;
  static std::atomic<uint64_t> raised{0};
  opt_in_shared_memory(reinterpret_cast<const void*>(kernel), kSmem, raised);
  const int row_warps = kWarps / sp.k_warps, rows_per_block = row_warps * kWarpRows;
  const int row_blocks = (p.N + rows_per_block - 1) / rows_per_block;
  const int passes = (p.M + kTiles * kTileCols - 1) / (kTiles * kTileCols);
  DSV4_CHECK_MSG(int64_t(row_blocks) * passes * sp.cluster <= INT32_MAX, "skinny GEMM M=", p.M, " N=", p.N,
                 ": too many blocks");
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(row_blocks * passes * sp.cluster), 1, 1);
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = kSmem;
  cfg.stream = stream;
  // Programmatic dependent launch as in launch_kernel (launch.cuh), plus the cluster shape.
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  attr[1].id = cudaLaunchAttributeClusterDimension;
  attr[1].val.clusterDim.x = unsigned(sp.cluster);
  attr[1].val.clusterDim.y = 1;
  attr[1].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = sp.cluster > 1 ? 2 : 1;
  DSV4_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, p, sp, passes));
}

template <SkinnyKind kKind, bool kOutBf16>
void launch_k(const SkinnyGemmParams& p, SkinnySplit sp, cudaStream_t stream) {
  // B tiles per pass: the fewest that cover min(M, rows per pass) rows (padding rows are zeros).
  const int per_pass = p.rows_per_pass > 0 ? p.rows_per_pass : skinny_rows_per_pass(kKind);
  const int rows = p.M < per_pass ? p.M : per_pass;
  if (rows <= 1 * kTileCols) return launch_kts<kKind, 1, kOutBf16>(p, sp, stream);
  if (rows <= 2 * kTileCols) return launch_kts<kKind, 2, kOutBf16>(p, sp, stream);
  if (rows <= 4 * kTileCols) return launch_kts<kKind, 4, kOutBf16>(p, sp, stream);
  static_assert(kMaxTiles == 8);
  return launch_kts<kKind, 8, kOutBf16>(p, sp, stream);
}

}  // namespace

int skinny_rows_per_pass(SkinnyKind kind) {
  // Measured by bench_cuda_matmul_bench on an H200 (bench/results/2026-12-04-h200-skinny-passes.md):
  //  - kFp8: passes of 16 rows (2 B tiles, two blocks per SM) win at every M from 33 to 512 on
  //    every Flash shape (at 9 rows all widths but 8 tie): wq_b 32768×1024 at 64 rows 32.3 µs
  //    against 42.1 µs in one 64-row pass and 47.9 µs in passes of 8; at 128 rows 60.3 against
  //    81.5 µs.
  //  - kBf16 and kFp8AsBf16: one 64-row pass. Their MMAs take the operands as loaded (BF16) or
  //    converted once per A tile, so wider passes cost less per row: the LM head 129280×4096 at
  //    64 rows 535 µs against 605 µs in passes of 16; the grouped wo_a (8 × 1024 × 4096) at 64
  //    rows 48.9 µs against 63.1 µs, at 128 rows 93.7 against 121.8 µs.
  return kind == SkinnyKind::kFp8 ? 16 : 64;
}

SkinnySplit skinny_split(int N, int n_units) {
  // Double the split while fewer than kTargetWarps warps would stream, each split keeps at least
  // one unit, and the split fits 8 warps × a portable cluster of 8.
  const int64_t row_tiles = (int64_t(N) + kWarpRows - 1) / kWarpRows;
  int s = 1;
  while (2 * s <= kMaxSplit && 2 * s <= n_units && row_tiles * s < kTargetWarps) s *= 2;
  SkinnySplit sp;
  sp.k_warps = s < kWarps ? s : kWarps;
  sp.cluster = s / sp.k_warps;
  return sp;
}

void launch_skinny_gemm(const SkinnyGemmParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.w && p.x && p.y);
  DSV4_CHECK_MSG(p.M >= 1 && p.N >= 1, "skinny GEMM M=", p.M, " N=", p.N);
  const bool fp8_w = p.kind != SkinnyKind::kBf16;
  const int k_align = fp8_w ? int(kFP8BlockSize) : L::kUnitBytes / 2;
  DSV4_CHECK_MSG(p.K >= k_align && p.K % k_align == 0, "skinny GEMM needs K % ", k_align, " == 0, K=", p.K);
  DSV4_CHECK_MSG(!fp8_w || p.w_scale, "FP8 weights without scales");
  DSV4_CHECK_MSG(p.kind != SkinnyKind::kFp8 || p.x_scale, "FP8 activations without scales");
  const int x_bytes = p.kind == SkinnyKind::kFp8 ? 1 : 2;
  const int64_t ldx = p.ldx > 0 ? p.ldx : p.K;
  DSV4_CHECK_MSG(ldx >= p.K || p.rows_per_group > 0, "ldx=", ldx, " < K=", p.K);
  DSV4_CHECK_MSG((ldx * x_bytes) % 16 == 0 && (p.group_stride * x_bytes) % 16 == 0, "ldx=", ldx,
                 " group_stride=", p.group_stride, " break 16-byte x loads");
  DSV4_CHECK_MSG(p.rows_per_group == 0 || (p.rows_per_group > 0 && p.rows_per_group % kWarpRows == 0),
                 "rows_per_group=", p.rows_per_group, " must be a multiple of ", kWarpRows);
  DSV4_CHECK_MSG(p.ldy == 0 || p.ldy >= p.N, "ldy=", p.ldy, " < N=", p.N);
  DSV4_CHECK((reinterpret_cast<uintptr_t>(p.w) | reinterpret_cast<uintptr_t>(p.x)) % 16 == 0);
  DSV4_CHECK_MSG(p.rows_per_pass == 0 || p.rows_per_pass == 8 || p.rows_per_pass == 16 || p.rows_per_pass == 32 ||
                     p.rows_per_pass == 64,
                 "skinny GEMM rows_per_pass=", p.rows_per_pass, " (0, 8, 16, 32 or 64)");
  SkinnyGemmParams q = p;
  q.ldx = ldx;
  const int n_units = int(int64_t(p.K) * (fp8_w ? 1 : 2) / L::kUnitBytes);
  const SkinnySplit sp = skinny_split(p.N, n_units);
  DSV4_CHECK(sp.cluster <= kMaxCluster);
  switch (p.kind) {
    case SkinnyKind::kFp8:
      return p.out_bf16 ? launch_k<SkinnyKind::kFp8, true>(q, sp, stream) : launch_k<SkinnyKind::kFp8, false>(q, sp, stream);
    case SkinnyKind::kBf16:
      return p.out_bf16 ? launch_k<SkinnyKind::kBf16, true>(q, sp, stream) : launch_k<SkinnyKind::kBf16, false>(q, sp, stream);
    case SkinnyKind::kFp8AsBf16:
      DSV4_CHECK_MSG(p.out_bf16, "FP8-as-BF16 GEMM (wo_a) writes BF16");
      return launch_k<SkinnyKind::kFp8AsBf16, true>(q, sp, stream);
  }
}

}  // namespace dsv4::cuda
