// The FP8 skinny GEMM on wgmma; see skinny_wgmma.cuh for the arithmetic and the row invariance.
//
// Per block: kStages shared-memory stages in a cp.async ring, one K group each. Per group the
// block waits for its stage, issues four chained wgmmas, waits for them and promotes the sums in
// FP32. The tensor core idles while a block promotes; the SM's other blocks fill it and keep the
// weight loads in flight (128 threads and four stages each: 41 KiB of shared memory at 8 tokens,
// five blocks per SM; 101 KiB and 156 registers at 128 tokens, two).
#include "cuda/kernels/skinny_wgmma.cuh"

#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include <atomic>
#include <climits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"
#include "cuda/kernels/swizzle128.cuh"
#include "cuda/kernels/wgmma_ptx.cuh"
#include "model/quant.h"

namespace dsv4::cuda {
namespace {

namespace cg = cooperative_groups;
using namespace wgmma_ptx;

constexpr int kThreads = 128;  // one warpgroup
constexpr int kTileRows = 64;  // weight rows per block: the wgmma's m
constexpr int kGroupK = 128;   // one FP8 scale block of K: one swizzle row of 128 bytes
constexpr int kStages = 4;
constexpr int kMaxCluster = 8;      // the portable cluster limit
constexpr int kTargetBlocks = 528;  // 4 × 132 SMs: the split stops doubling at this many blocks
static_assert(kFP8BlockSize == kGroupK, "a K group is one scale block");


// One stage for kN tokens: weights [64][128] E4M3 (8 KiB, 1024-aligned), tokens [kN][128] E4M3
// (1024-aligned), activation scales [kN] FP32; padded to 1024 bytes.
template <int kN>
struct Stage {
  static constexpr int kXOffset = kTileRows * kGroupK;
  static constexpr int kSxOffset = kXOffset + kN * kGroupK;
  static constexpr int kBytes = (kSxOffset + kN * 4 + 1023) / 1024 * 1024;
  static constexpr size_t kSmem = 1024 + size_t(kStages) * kBytes;  // + slack to align to 1024
  static constexpr int kAcc = kN / 2;                                // D fragment floats per thread
  // The cluster's exchange [kAcc][kThreads] floats reuses the stages.
  static_assert(size_t(kAcc) * kThreads * 4 <= size_t(kStages) * kBytes, "exchange fits the stages");
};

// d = A·B + (accumulate ? d : 0), m64nNk32, E4M3 × E4M3 -> FP32, both operands K-major in shared
// memory (descriptors a: 64 weight rows, b: N token rows).
template <int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t a, uint64_t b, bool accumulate) {
  static_assert(N == 8 || N == 16 || N == 32 || N == 64 || N == 128, "the token widths");
  if constexpr (N == 8) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k32.f32.e4m3.e4m3 {"
        "%0, %1, %2, %3"
        "}, %4, %5, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "l"(a), "l"(b), "r"(int(accumulate))
        : "memory");
  } else if constexpr (N == 16) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 {"
        "%0, %1, %2, %3, %4, %5, %6, %7"
        "}, %8, %9, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "l"(a), "l"(b), "r"(int(accumulate))
        : "memory");
  } else if constexpr (N == 32) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
        "}, %16, %17, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(a), "l"(b), "r"(int(accumulate))
        : "memory");
  } else if constexpr (N == 64) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, %32, %33, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),
          "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),
          "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),
          "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(a), "l"(b), "r"(int(accumulate))
        : "memory");
  } else if constexpr (N == 128) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, %64, %65, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),
          "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),
          "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),
          "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
          "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),
          "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),
          "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
          "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a), "l"(b), "r"(int(accumulate))
        : "memory");
  }
}

// The second matrix of a pair launch (launch_skinny_wgmma_pair): row tiles from `first_tile` on
// are its own (first_tile = INT_MAX: no second matrix).
struct SecondMatrix {
  const void* w = nullptr;
  const uint8_t* w_scale = nullptr;
  void* y = nullptr;
  int N = 0;
  int first_tile = INT_MAX;
};

template <int kN, bool kOutBf16>
__global__ void __launch_bounds__(kThreads) skinny_wgmma_kernel(SkinnyGemmParams p, SecondMatrix second, int cluster) {
  using St = Stage<kN>;
  constexpr int kA = St::kAcc;
  wait_for_prior_grids();
  extern __shared__ uint8_t smem_raw[];
  // The stages start on a 1024-byte boundary of the shared window (the swizzle atom).
  uint8_t* stages = smem_raw + ((1024 - (shared_address(smem_raw) & 1023)) & 1023);
  const int tid = threadIdx.x, warp = tid / kWarpSize, lane = tid % kWarpSize, g = lane / 4, q = lane % 4;
  const int rank = int(blockIdx.x) % cluster;
  int tile = int(blockIdx.x) / cluster;
  if (tile >= second.first_tile) {  // the same work on the second matrix's tile, as its own launch would
    tile -= second.first_tile;
    p.w = second.w;
    p.w_scale = second.w_scale;
    p.y = second.y;
    p.N = second.N;
  }
  const int n0 = tile * kTileRows;
  const int n_groups = p.K / kGroupK;
  const int my_groups = (n_groups - 1 - rank) / cluster + 1;  // groups rank, rank + cluster, … (cluster <= n_groups)
  const uint8_t* ws_row = p.w_scale + int64_t(n0 / int(kFP8BlockSize)) * n_groups;  // the tile's scale row

  // ---- Loads. Per group, thread tid copies chunks 4·(tid%2) .. +3 of weight row tid/2 (zeros
  // past N); threads < kXLoaders chunks x_c0 .. + kXPer − 1 of token x_tok (zeros past M);
  // threads < kN their token's activation scale, through a register stored one step later.
  constexpr int kXPer = kN * 8 >= kThreads ? kN * 8 / kThreads : 1, kXLoaders = kN * 8 / kXPer;
  const int w_r = tid / 2, w_c0 = (tid % 2) * 4;
  const bool w_ok = n0 + w_r < p.N;
  const uint8_t* w_src = static_cast<const uint8_t*>(p.w) + int64_t(w_ok ? n0 + w_r : 0) * p.K;
  const int x_tok = tid * kXPer / 8, x_c0 = tid * kXPer % 8;
  const bool x_ok = tid < kXLoaders && x_tok < p.M;
  const uint8_t* x_src = static_cast<const uint8_t*>(p.x) + int64_t(x_ok ? x_tok : 0) * p.K;
  float sx_pending = 0.0f;
  int sx_slot = -1;
  // The activation scale loaded by the last load, into its stage (free since the barrier before
  // that load).
  const auto flush_sx = [&] {
    if (sx_slot >= 0) {
      reinterpret_cast<float*>(stages + sx_slot * St::kBytes + St::kSxOffset)[tid] = sx_pending;
      sx_slot = -1;
    }
  };
  const auto load = [&](int i) {  // this block's i-th group into stage i % kStages
    flush_sx();
    if (i < my_groups) {
      const int64_t k0 = int64_t(rank + i * cluster) * kGroupK;
      uint8_t* st = stages + (i % kStages) * St::kBytes;
#pragma unroll
      for (int c = 0; c < 4; ++c)
        cp_async16(shared_address(st + swizzled_chunk(w_r, w_c0 + c)), w_src + k0 + (w_c0 + c) * 16, w_ok);
      if (tid < kXLoaders) {
#pragma unroll
        for (int c = 0; c < kXPer; ++c)
          cp_async16(shared_address(st + St::kXOffset + swizzled_chunk(x_tok, x_c0 + c)), x_src + k0 + (x_c0 + c) * 16,
                     x_ok);
      }
      if (tid < kN) {
        sx_pending = tid < p.M ? e8m0_to_float_select(p.x_scale[int64_t(tid) * n_groups + k0 / kGroupK]) : 0.0f;
        sx_slot = i % kStages;
      }
    }
    cp_async_commit();  // one group per load, empty or not: the wait counts stay uniform
  };

  // ---- Compute. pr: the current group's wgmma sums (D fragment: element 4j + c = weight row
  // 16·warp + g + 8·(c/2), token 8j + 2q + c%2); acc: the FP32 totals.
  float pr[kA], acc[kA];
#pragma unroll
  for (int i = 0; i < kA; ++i) pr[i] = acc[i] = 0.0f;
#pragma unroll 1
  for (int i = 0; i < kStages - 1; ++i) load(i);
#pragma unroll 1
  for (int i = 0; i < my_groups; ++i) {
    flush_sx();                    // before the barrier: group i + kStages − 2's scale
    cp_async_wait<kStages - 2>();  // this thread's copies of group i have landed
    fence_proxy_async();
    __syncthreads();               // everyone's have; and group i − 1's stage is free
    load(i + kStages - 1);
    const float sw = e8m0_to_float_select(ws_row[rank + i * cluster]);
    const uint8_t* st = stages + (i % kStages) * St::kBytes;
    const uint32_t a = shared_address(st), b = shared_address(st + St::kXOffset);
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < kGroupK / 32; ++k) wgmma_ss<kN>(pr, sw128_descriptor(a + 32 * k), sw128_descriptor(b + 32 * k), k > 0);
    wgmma_commit();
    wgmma_wait<0>();
    // × s_w·s_x (powers of two: their product is exact within FP32's range), into the totals.
    const float* sx = reinterpret_cast<const float*>(st + St::kSxOffset);
#pragma unroll
    for (int j = 0; j < kA / 4; ++j) {
      const float2 s2 = *reinterpret_cast<const float2*>(sx + 8 * j + 2 * q);
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[4 * j + c] = __fmaf_rn(pr[4 * j + c], __fmul_rn(sw, (c & 1) ? s2.y : s2.x), acc[4 * j + c]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every stage consumed: the exchange may reuse them

  // ---- The cluster's split of K: rank 0 adds ranks 1, 2, … in order.
  if (cluster > 1) {
    float* mine = reinterpret_cast<float*>(stages);  // [kA][kThreads]
#pragma unroll
    for (int i = 0; i < kA; ++i) mine[i * kThreads + tid] = acc[i];
    cg::cluster_group cl = cg::this_cluster();
    cl.sync();
    if (rank == 0)
      for (int o = 1; o < cluster; ++o) {
        const float* other = cl.map_shared_rank(mine, o);
#pragma unroll
        for (int i = 0; i < kA; ++i) acc[i] = __fadd_rn(acc[i], other[i * kThreads + tid]);
      }
    cl.sync();  // no block leaves while rank 0 still reads its shared memory
    if (rank != 0) return;
  }

  const int row = n0 + 16 * warp + g;
#pragma unroll
  for (int j = 0; j < kA / 4; ++j)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int n = row + 8 * (c >> 1), m = 8 * j + 2 * q + (c & 1);
      if (n >= p.N || m >= p.M) continue;
      if constexpr (kOutBf16)
        static_cast<__nv_bfloat16*>(p.y)[int64_t(m) * p.N + n] = __float2bfloat16_rn(acc[4 * j + c]);
      else
        static_cast<float*>(p.y)[int64_t(m) * p.N + n] = acc[4 * j + c];
    }
}

int64_t row_tiles(int N) { return (int64_t(N) + kTileRows - 1) / kTileRows; }

template <int kN, bool kOutBf16>
void launch_n(const SkinnyGemmParams& p, const SecondMatrix& second, cudaStream_t stream) {
  auto* kernel = &skinny_wgmma_kernel<kN, kOutBf16>;
  static std::atomic<uint64_t> raised{0};
  opt_in_shared_memory(reinterpret_cast<const void*>(kernel), Stage<kN>::kSmem, raised);
  const int cluster = skinny_wgmma_cluster(p.N, p.K);
  const int64_t tiles = row_tiles(p.N) + (second.first_tile == INT_MAX ? 0 : row_tiles(second.N));
  const int64_t blocks = tiles * cluster;
  DSV4_CHECK_MSG(blocks <= INT32_MAX, "skinny wgmma N=", p.N, " + ", second.N, ": too many blocks");
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(blocks), 1, 1);
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = Stage<kN>::kSmem;
  cfg.stream = stream;
  // Programmatic dependent launch as in launch_kernel (launch.cuh), plus the cluster shape.
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  attr[1].id = cudaLaunchAttributeClusterDimension;
  attr[1].val.clusterDim.x = unsigned(cluster);
  attr[1].val.clusterDim.y = 1;
  attr[1].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = cluster > 1 ? 2 : 1;
  DSV4_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, p, second, cluster));
}

template <bool kOutBf16>
void launch_typed(const SkinnyGemmParams& p, const SecondMatrix& second, cudaStream_t stream) {
  // The narrowest wgmma that holds every row (rows past M are zeros).
  if (p.M <= 8) return launch_n<8, kOutBf16>(p, second, stream);
  if (p.M <= 16) return launch_n<16, kOutBf16>(p, second, stream);
  if (p.M <= 32) return launch_n<32, kOutBf16>(p, second, stream);
  if (p.M <= 64) return launch_n<64, kOutBf16>(p, second, stream);
  return launch_n<128, kOutBf16>(p, second, stream);
}

void check_params(const SkinnyGemmParams& p) {
  DSV4_CHECK(p.w && p.w_scale && p.x && p.x_scale && p.y);
  DSV4_CHECK_MSG(p.kind == SkinnyKind::kFp8, "skinny wgmma: FP8 weights and activations only");
  DSV4_CHECK_MSG(p.M >= 1 && p.M <= 128 && p.N >= 1, "skinny wgmma M=", p.M, " N=", p.N, " (M in [1, 128])");
  DSV4_CHECK_MSG(p.K >= kGroupK && p.K % kGroupK == 0, "skinny wgmma needs K % 128 == 0, K=", p.K);
  DSV4_CHECK_MSG(p.rows_per_group == 0 && (p.ldx == 0 || p.ldx == p.K) && (p.ldy == 0 || p.ldy == p.N),
                 "skinny wgmma: dense rows only (no groups, ldx = K, ldy = N)");
  DSV4_CHECK((reinterpret_cast<uintptr_t>(p.w) | reinterpret_cast<uintptr_t>(p.x)) % 16 == 0);
}

}  // namespace

int skinny_wgmma_cluster(int N, int K) {
  // Double the split while fewer than kTargetBlocks blocks would stream and each rank keeps a
  // group.
  const int64_t tiles = (int64_t(N) + kTileRows - 1) / kTileRows;
  const int groups = K / kGroupK;
  int c = 1;
  while (2 * c <= kMaxCluster && 2 * c <= groups && tiles * c < kTargetBlocks) c *= 2;
  return c;
}

void launch_skinny_wgmma(const SkinnyGemmParams& p, cudaStream_t stream) {
  check_params(p);
  p.out_bf16 ? launch_typed<true>(p, SecondMatrix{}, stream) : launch_typed<false>(p, SecondMatrix{}, stream);
}

bool skinny_wgmma_pairable(int N_a, int N_b, int K) { return skinny_wgmma_cluster(N_a, K) == skinny_wgmma_cluster(N_b, K); }

void launch_skinny_wgmma_pair(const SkinnyGemmParams& a, const SkinnyGemmParams& b, cudaStream_t stream) {
  check_params(a);
  check_params(b);
  DSV4_CHECK_MSG(a.x == b.x && a.x_scale == b.x_scale && a.M == b.M && a.K == b.K && a.out_bf16 == b.out_bf16,
                 "skinny wgmma pair: the two linears must share their activations, rows and output type");
  DSV4_CHECK_MSG(skinny_wgmma_pairable(a.N, b.N, a.K), "skinny wgmma pair: N=", a.N, " and N=", b.N, " at K=", a.K,
                 " split K differently (skinny_wgmma_pairable)");
  const SecondMatrix second{b.w, b.w_scale, b.y, b.N, int(row_tiles(a.N))};
  a.out_bf16 ? launch_typed<true>(a, second, stream) : launch_typed<false>(a, second, stream);
}

}  // namespace dsv4::cuda
