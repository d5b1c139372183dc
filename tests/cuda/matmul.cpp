// Parity of the matmul dispatch (src/cuda/matmul.h: the skinny tensor-core kernel and cuBLASLt)
// against a double-precision product of the scalar dequantisation (model/quant.h, §11.2), the
// existing GEMVs, and itself across M (row invariance); plus a host emulation of the skinny
// kernel's register layout against the PTX MMA fragment layout (runs without a GPU).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "cuda/kernels/gemv_bf16.cuh"
#include "cuda/kernels/gemv_fp8.cuh"
#include "cuda/kernels/skinny_gemm.cuh"
#include "cuda/kernels/skinny_wgmma.cuh"
#include "cuda/matmul.h"
#include "fp8_accumulator_model.h"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

namespace L = skinny_layout;

// ---- host emulation of one warp's K unit (no GPU) ----
//
// The PTX ISA's fragment layout of mma.m16n8k16 (.f16 and .bf16 alike): which lane, register and
// sub-word hold A[r][κ] and B[κ][c]. The emulation feeds each lane's registers the way
// skinny_gemm.cu does (through skinny_layout) and evaluates the MMAs by this layout; the sums must
// equal the plain dot products of the unit.
struct Slot {
  int lane, reg, sub;
};
Slot a_slot_k16(int r, int k) { return {(r % 8) * 4 + (k % 8) / 2, (r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0), k % 2}; }
Slot b_slot_k16(int k, int c) { return {c * 4 + (k % 8) / 2, k >= 8 ? 1 : 0, k % 2}; }

// Register contents as element values: regs[lane][reg][sub].
using Frag = std::vector<std::array<std::array<int64_t, 4>, 4>>;

// Emulates the skinny kernel on one unit: W [32 rows][unit K values], X [8 rows][unit K values]
// (integers, so every sum is exact). Returns D[32][8].
std::vector<int64_t> emulate_unit(SkinnyKind kind, const std::vector<int64_t>& W, const std::vector<int64_t>& X) {
  const int w_elem = kind == SkinnyKind::kBf16 ? 2 : 1;  // bytes per weight element
  const int x_elem = kind == SkinnyKind::kFp8 ? 1 : 2;
  const int unit_k = L::kUnitBytes / w_elem;
  const int steps = kind == SkinnyKind::kFp8AsBf16 ? 4 : 2;
  const int k16_per_step = kind == SkinnyKind::kFp8 ? 2 : 1;  // kFp8: two F16 MMAs per step
  std::vector<int64_t> D(32 * 8, 0);
  for (int h = 0; h < 2; ++h)
    for (int sm = 0; sm < steps * k16_per_step; ++sm)  // MMA step s, its F16 MMA m
      for (int a = 0; a < 2; ++a) {
        const int s = sm / k16_per_step, m = sm % k16_per_step;
        Frag af(32), bf(32);
        for (int lane = 0; lane < 32; ++lane) {
          // Weight chunk of row i: 16 bytes from byte chunk_byte(lane, h) = elements / w_elem.
          const auto w_el = [&](int i, int e) {  // element e of the chunk of row chunk_row(lane, i)
            return W[size_t(L::chunk_row(lane, i)) * unit_k + L::chunk_byte(lane, h) / w_elem + e];
          };
          const int lo = 2 * a, hi = 2 * a + 1;
          const int per_word = 4 / w_elem;  // elements per 32-bit word of the chunk
          if (kind != SkinnyKind::kBf16) {
            // One byte per weight value, expanded to a 16-bit pair per register: a0 = bytes 0,1 of
            // word w, a2 = bytes 2,3 (rows g); a1, a3 the same of rows g + 8. w is s (kFp8AsBf16)
            // or word_of_step(s, m) (kFp8's F16 MMA m of step s).
            const int w = kind == SkinnyKind::kFp8AsBf16 ? s : L::word_of_step(s, m);
            for (int sub = 0; sub < 2; ++sub) {
              af[lane][0][sub] = w_el(lo, 4 * w + sub);
              af[lane][2][sub] = w_el(lo, 4 * w + 2 + sub);
              af[lane][1][sub] = w_el(hi, 4 * w + sub);
              af[lane][3][sub] = w_el(hi, 4 * w + 2 + sub);
            }
          } else {
            for (int sub = 0; sub < per_word; ++sub) {
              af[lane][0][sub] = w_el(lo, L::word_of_step(s, 0) * per_word + sub);
              af[lane][2][sub] = w_el(lo, L::word_of_step(s, 1) * per_word + sub);
              af[lane][1][sub] = w_el(hi, L::word_of_step(s, 0) * per_word + sub);
              af[lane][3][sub] = w_el(hi, L::word_of_step(s, 1) * per_word + sub);
            }
          }
          // x chunk(s) of row g = lane / 4.
          const int g = lane / 4, x_per_word = 4 / x_elem;
          const auto x_word_el = [&](int byte_off, int word, int sub) {
            return X[size_t(g) * unit_k + (byte_off + 4 * word) / x_elem + sub];
          };
          for (int sub = 0; sub < x_per_word; ++sub) {
            if (kind == SkinnyKind::kFp8AsBf16) {
              const int off = L::x_chunk_bytes_fp8_as_bf16(lane, h, s / 2);
              bf[lane][0][sub] = x_word_el(off, L::word_of_step(s % 2, 0), sub);
              bf[lane][1][sub] = x_word_el(off, L::word_of_step(s % 2, 1), sub);
            } else if (kind == SkinnyKind::kFp8) {  // b0 = bytes 0,1 of word_of_step(s, m), b1 = bytes 2,3
              if (sub < 2) {
                bf[lane][0][sub] = x_word_el(L::chunk_byte(lane, h), L::word_of_step(s, m), sub);
                bf[lane][1][sub] = x_word_el(L::chunk_byte(lane, h), L::word_of_step(s, m), 2 + sub);
              }
            } else {
              bf[lane][0][sub] = x_word_el(L::chunk_byte(lane, h), L::word_of_step(s, 0), sub);
              bf[lane][1][sub] = x_word_el(L::chunk_byte(lane, h), L::word_of_step(s, 1), sub);
            }
          }
        }
        for (int r = 0; r < 16; ++r)
          for (int c = 0; c < 8; ++c)
            for (int k = 0; k < 16; ++k) {
              const Slot sa = a_slot_k16(r, k);
              const Slot sb = b_slot_k16(k, c);
              D[size_t(16 * a + r) * 8 + c] += af[sa.lane][sa.reg][sa.sub] * bf[sb.lane][sb.reg][sb.sub];
            }
      }
  return D;
}

TEST(SkinnyGemmLayout, EmulatedWarpUnitEqualsDotProducts) {
  for (const SkinnyKind kind : {SkinnyKind::kFp8, SkinnyKind::kBf16, SkinnyKind::kFp8AsBf16}) {
    const int unit_k = kind == SkinnyKind::kBf16 ? 64 : 128;
    std::vector<int64_t> W(size_t(32) * unit_k), X(size_t(8) * unit_k);
    // Distinct powers-of-two-spaced values: a wrong pairing changes the sum.
    for (size_t i = 0; i < W.size(); ++i) W[i] = int64_t((i * 2654435761u) % 1009) - 504;
    for (size_t i = 0; i < X.size(); ++i) X[i] = int64_t((i * 40503u) % 997) - 498;
    const auto D = emulate_unit(kind, W, X);
    int64_t bad = 0;
    for (int r = 0; r < 32; ++r)
      for (int c = 0; c < 8; ++c) {
        int64_t ref = 0;
        for (int k = 0; k < unit_k; ++k) ref += W[size_t(r) * unit_k + k] * X[size_t(c) * unit_k + k];
        bad += D[size_t(r) * 8 + c] != ref;
      }
    EXPECT_EQ(bad, 0) << "kind " << int(kind);
  }
}

TEST(SkinnyGemmLayout, EveryUnitByteIsLoadedOnce) {
  // Over 4 lanes of a row group and 2 halves the 16-byte chunks tile the 128-byte unit.
  std::vector<int> hits(L::kUnitBytes, 0);
  for (int t = 0; t < 4; ++t)
    for (int h = 0; h < 2; ++h)
      for (int b = 0; b < L::kChunkBytes; ++b) ++hits[size_t(L::chunk_byte(t, h) + b)];
  EXPECT_TRUE(std::all_of(hits.begin(), hits.end(), [](int n) { return n == 1; }));
  std::set<int> rows;
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) rows.insert(L::chunk_row(lane, i));
  EXPECT_EQ(rows.size(), 32u);
  EXPECT_EQ(*rows.rbegin(), 31);
}

TEST(SkinnyGemmSplit, DependsOnShapeOnlyAndCoversK) {
  // Row invariance rests on skinny_split(N, units) — it has no M argument by construction; here:
  // every split keeps ≥ 1 unit and fits 8 warps × a cluster of 8.
  for (int N : {1, 4, 64, 256, 512, 1024, 4096, 32768, 129280})
    for (int units : {1, 2, 8, 32, 64, 128}) {
      const SkinnySplit sp = skinny_split(N, units);
      EXPECT_GE(sp.k_warps, 1);
      EXPECT_LE(sp.k_warps, 8);
      EXPECT_LE(sp.cluster, 8);
      EXPECT_LE(sp.n_split(), units) << "N=" << N << " units=" << units;
      EXPECT_TRUE(sp.cluster == 1 || sp.k_warps == 8);
    }
}

// The wgmma kernel's split (skinny_wgmma_cluster(N, K), no M argument): a power of two up to 8
// that leaves every rank a K group; the MatmulTest shapes cover clusters of 1, 2, 4 and 8.
TEST(SkinnyWgmmaSplit, ClusterIsAPowerOfTwoThatCoversK) {
  for (int N : {1, 64, 129, 512, 1024, 4096, 8192, 12288, 32768})
    for (int K : {128, 256, 384, 1024, 4096, 8192}) {
      const int c = skinny_wgmma_cluster(N, K);
      EXPECT_TRUE(c == 1 || c == 2 || c == 4 || c == 8) << "N=" << N << " K=" << K << ": " << c;
      EXPECT_LE(c, K / 128) << "N=" << N << " K=" << K;
    }
  EXPECT_EQ(skinny_wgmma_cluster(256, 128), 1);
  EXPECT_EQ(skinny_wgmma_cluster(129, 384), 2);
  EXPECT_EQ(skinny_wgmma_cluster(12288, 1024), 4);
  EXPECT_EQ(skinny_wgmma_cluster(1024, 4096), 8);
}

// ---- GPU parity ----

constexpr double kU = kF32Unit;
// Accumulation model (derivations for the budgets below):
//  * MMA: sm_90 has no E4M3 mma.sync; the skinny kernel converts E4M3 → F16 exactly and runs
//    m16n8k16 F16 MMAs (HMMA.16816.F32), as ptxas itself lowers an E4M3 m16n8k32; products are
//    exact in FP32. One k16 HMMA adds 16 products to the
//    accumulator in ≤ 4 truncating steps (tensor cores align to the largest term and truncate:
//    Fasi et al., "Numerical behavior of NVIDIA tensor cores", 2021), each ≤ 1 ulp = 2u of a
//    magnitude ≤ Σ|terms|: ≤ 8u·Σ|terms| per HMMA.
//  * Skinny FP8: per 128-wide unit 8 HMMAs → 64u·Σ_unit|p|; the scaled unit sums are added by
//    FMAs (≤ n_kb·u) and the ≤ 64 splits by adds (≤ 64u): γ = (64 + n_kb + 64)·u of Σ|w·x|.
//  * Skinny BF16: K/16 HMMAs per element → K/2·u, plus the split adds: γ = (K/2 + 64)·u.
//  * cuBLASLt FP8 (wgmma): Hopper's FP8 tensor-core sums keep 13 fraction bits (the e8m13
//    accumulator: Khattak & Mikaitis, "Accurate models of NVIDIA tensor cores", 2025; DeepSeek-V3
//    report §3.3.2), so this path has its own per-element bound, fp8_accumulator_model.h's, not a
//    γ·S term. The block scales differ per 128 columns, so cuBLASLt must leave the tensor core at
//    least once per 128-wide block: the FP32 part is the scaled block sums' adds, (n_kb + 2)·u.
//    (Until 2026-12-04 this was a calibrated γ = 2^-10; it failed once at 1.10× on an H200.)
//  * cuBLASLt BF16: as the skinny BF16 model (wgmma k16 steps): γ = (K/2 + 64)·u.
//  * Skinny wgmma (FP8 only): the FP8 tensor-core bound per 128-wide group, as cuBLASLt's; each
//    group's scaled sum goes into its rank's total by one FFMA (≤ n_kb in all), and rank 0 adds
//    the ≤ 8 cluster ranks' totals: γ = (n_kb + 8)·u.
// BF16 output adds half an ulp of the result (kBf16HalfUlp).
double gamma_for(bool fp8, MatmulPath path, int K) {
  const int n_kb = K / 128;
  if (path == MatmulPath::kSkinny) return fp8 ? (128.0 + n_kb) * kU : (K / 2.0 + 64) * kU;
  if (path == MatmulPath::kWgmma) return (n_kb + 8) * kU;
  return fp8 ? (n_kb + 2) * kU : (K / 2.0 + 64) * kU;
}


struct Shape {
  const char* name;
  bool fp8;
  int N, K;
  bool out_bf16;
};

const std::vector<int> kMs = {1, 2, 7, 8, 9, 33, 64, 127, 128, 129, 512, 2048, 8192};
constexpr int kRefRows = 512;  // the skinny run the smaller M runs must equal bit for bit

class MatmulTest : public CudaOpTest, public ::testing::WithParamInterface<Shape> {};

struct HostProblem {
  std::vector<uint8_t> w, ws, x, xs;  // fp8 bytes, or bf16 as byte pairs
  std::vector<float> wd, xd;          // dequantised [N, K], [Mmax, K]
};

TEST_P(MatmulTest, MatchesDequantisedProductAndIsRowInvariant) {
  const Shape c = GetParam();
  const int Mmax = kMs.back(), nkb = c.K / 128, nnb = (c.N + 127) / 128;
  HostProblem h;
  if (c.fp8) {
    // The whole E4M3 grid (subnormals, ±448), scales over 2^±8: every block path is exercised.
    h.w = random_e4m3(size_t(c.N) * c.K);
    h.ws = random_e8m0(size_t(nnb) * nkb, 8);
    h.x = random_e4m3(size_t(Mmax) * c.K);
    h.xs = random_e8m0(size_t(Mmax) * nkb, 8);
    WeightMatrix wm;
    wm.name = "test.w";
    wm.format = WeightFormat::kFP8Block;
    wm.rows = c.N;
    wm.cols = c.K;
    wm.data = h.w.data();
    wm.scale = h.ws.data();
    h.wd.resize(size_t(c.N) * c.K);
    wm.dequant_rows(0, c.N, h.wd.data());
    h.xd.resize(h.x.size());
    for (size_t i = 0; i < h.x.size(); ++i) h.xd[i] = e4m3_to_f32(h.x[i]) * e8m0_to_f32(h.xs[i / 128]);
  } else {
    const auto wb = to_bf16(normals(size_t(c.N) * c.K, 0.05f)), xb = to_bf16(normals(size_t(Mmax) * c.K, 1.0f));
    h.w.resize(wb.size() * 2);
    std::memcpy(h.w.data(), wb.data(), h.w.size());
    h.x.resize(xb.size() * 2);
    std::memcpy(h.x.data(), xb.data(), h.x.size());
    h.wd = from_bf16(wb);
    h.xd = from_bf16(xb);
  }
  DeviceBuffer<uint8_t> d_w(h.w), d_ws(h.ws), d_x(h.x), d_xs(h.xs);
  const size_t out_bytes = c.out_bf16 ? 2 : 4;
  DeviceBuffer<uint8_t> d_y(size_t(Mmax) * c.N * out_bytes);

  const auto run = [&](int M, MatmulPath path) {
    d_y.fill_bytes(kPoisonByte);
    MatmulParams p;
    p.w = d_w.get();
    p.w_scale = c.fp8 ? d_ws.get() : nullptr;
    p.x = d_x.get();
    p.x_scale = c.fp8 ? d_xs.get() : nullptr;
    p.y = d_y.get();
    p.M = M;
    p.N = c.N;
    p.K = c.K;
    p.out_bf16 = c.out_bf16;
    p.path = path;
    const MatmulPath ran = matmul(p, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<uint8_t> bytes(size_t(M) * c.N * out_bytes);
    DSV4_CUDA_CHECK(cudaMemcpy(bytes.data(), d_y.get(), bytes.size(), cudaMemcpyDeviceToHost));
    return std::make_pair(ran, bytes);
  };
  const auto as_float = [&](const std::vector<uint8_t>& bytes, size_t i) {
    if (c.out_bf16) {
      uint16_t v;
      std::memcpy(&v, bytes.data() + 2 * i, 2);
      return bf16_to_f32(v);
    }
    float v;
    std::memcpy(&v, bytes.data() + 4 * i, 4);
    return v;
  };
  // Reference and budget of one element (lt_fp8: add the FP8 tensor-core bound).
  const auto ref_at = [&](int m, int n, double gamma, double* budget, bool lt_fp8 = false) {
    double s = 0, sa = 0;
    const float* wr = h.wd.data() + size_t(n) * c.K;
    const float* xr = h.xd.data() + size_t(m) * c.K;
    std::vector<double> p(size_t(c.K));
    for (int k = 0; k < c.K; ++k) {
      p[size_t(k)] = double(wr[k]) * xr[k];
      s += p[size_t(k)];
      sa += std::fabs(p[size_t(k)]);
    }
    const double tc = lt_fp8 ? fp8_group_sum_error(p.data(), c.K) : 0.0;
    *budget = (gamma * sa + tc) * (1 + kBf16HalfUlp) + (c.out_bf16 ? kBf16HalfUlp * std::fabs(s) : 0) + 1e-30;
    return s;
  };
  // Checks every element for poison, and rows {0, M/2, M−1} fully plus 2048 random elements
  // against the reference (a full double product at M = 8192 would take minutes).
  const auto check = [&](int M, MatmulPath ran, const std::vector<uint8_t>& bytes) {
    const double gamma = gamma_for(c.fp8, ran, c.K);
    std::vector<std::pair<int, int>> pts;
    for (int m : {0, M / 2, M - 1})
      for (int n = 0; n < c.N; ++n) pts.emplace_back(m, n);
    for (int i = 0; i < 2048; ++i) pts.emplace_back(uniform_int(0, M - 1), uniform_int(0, c.N - 1));
    std::vector<float> got;
    std::vector<double> ref, budget;
    for (const auto& [m, n] : pts) {
      double b;
      ref.push_back(ref_at(m, n, gamma, &b, c.fp8 && (ran == MatmulPath::kLt || ran == MatmulPath::kWgmma)));
      budget.push_back(b);
      got.push_back(as_float(bytes, size_t(m) * c.N + n));
    }
    int64_t unwritten = 0;
    for (size_t i = 0; i < size_t(M) * c.N; ++i) unwritten += !std::isfinite(as_float(bytes, i));
    EXPECT_EQ(unwritten, 0) << c.name << " M=" << M << ": non-finite (unwritten) outputs";
    expect_parity(cat("matmul ", c.name, " M=", M, ran == MatmulPath::kLt ? " lt" : ran == MatmulPath::kWgmma ? " wgmma" : " skinny"),
                  got, ref, budget);
  };

  // The skinny reference run for row invariance, then every M through the dispatch (and the
  // other kernel where both are plausible).
  const auto [ran_ref, skinny_ref] = run(kRefRows, MatmulPath::kSkinny);
  ASSERT_EQ(ran_ref, MatmulPath::kSkinny);
  for (const int M : kMs) {
    std::vector<MatmulPath> paths = {MatmulPath::kAuto};
    if (M <= kRefRows && matmul_choose(c.fp8, M, c.N, c.K) != MatmulPath::kSkinny) paths.push_back(MatmulPath::kSkinny);
    if (M >= 64 && matmul_choose(c.fp8, M, c.N, c.K) != MatmulPath::kLt) paths.push_back(MatmulPath::kLt);
    for (const MatmulPath path : paths) {
      const auto [ran, bytes] = run(M, path);
      if (path != MatmulPath::kAuto && ran != path)
        std::printf("[note]   %s M=%d: cuBLASLt has no algorithm, the skinny kernel ran\n", c.name, M);
      check(M, ran, bytes);
      if (ran == MatmulPath::kSkinny && M <= kRefRows) {
        // Row invariance: the first M rows equal the 512-row skinny run byte for byte.
        const size_t n = size_t(M) * c.N * out_bytes;
        EXPECT_EQ(std::memcmp(bytes.data(), skinny_ref.data(), n), 0)
            << c.name << ": skinny rows of an M=" << M << " call differ from the same rows at M=" << kRefRows;
      }
    }
  }

  // The FP8 skinny GEMM on wgmma (MatmulPath::kWgmma): every token width (8, 16, 32, 64, 128)
  // within its budget, and each row byte for byte the same row of the 128-row run.
  if (c.fp8) {
    const auto [ran_w, wgmma_ref] = run(128, MatmulPath::kWgmma);
    ASSERT_EQ(ran_w, MatmulPath::kWgmma);
    check(128, ran_w, wgmma_ref);
    for (const int M : {1, 2, 7, 8, 9, 17, 32, 33, 64, 65, 127}) {
      const auto [ran, bytes] = run(M, MatmulPath::kWgmma);
      check(M, ran, bytes);
      EXPECT_EQ(std::memcmp(bytes.data(), wgmma_ref.data(), bytes.size()), 0)
          << c.name << ": wgmma rows of an M=" << M << " call differ from the same rows at M=128";
    }
  }

  // Every pass width of the skinny kernel gives the same rows: M = 100 in passes of 8, 16, 32 and
  // 64 rows (13, 7, 4 and 2 passes, the last one partial) equals the 512-row run byte for byte.
  for (const int rows_per_pass : {8, 16, 32, 64}) {
    constexpr int M = 100;
    d_y.fill_bytes(kPoisonByte);
    SkinnyGemmParams q;
    q.kind = c.fp8 ? SkinnyKind::kFp8 : SkinnyKind::kBf16;
    q.w = d_w.get();
    q.w_scale = c.fp8 ? d_ws.get() : nullptr;
    q.x = d_x.get();
    q.x_scale = c.fp8 ? d_xs.get() : nullptr;
    q.y = d_y.get();
    q.M = M;
    q.N = c.N;
    q.K = c.K;
    q.out_bf16 = c.out_bf16;
    q.rows_per_pass = rows_per_pass;
    launch_skinny_gemm(q, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<uint8_t> bytes(size_t(M) * c.N * out_bytes);
    DSV4_CUDA_CHECK(cudaMemcpy(bytes.data(), d_y.get(), bytes.size(), cudaMemcpyDeviceToHost));
    EXPECT_EQ(std::memcmp(bytes.data(), skinny_ref.data(), bytes.size()), 0)
        << c.name << ": skinny rows in passes of " << rows_per_pass << " differ from the " << kRefRows << "-row run";
  }

  // Against the GEMVs it replaces (M ≤ 8): |skinny − gemv| within both budgets; the GEMV's is
  // (64 + K/16)·u of Σ|w·x| (tests/cuda/gemv_*.cpp).
  for (const int M : {1, 2, 7, 8}) {
    const auto [ran, bytes] = run(M, MatmulPath::kSkinny);
    d_y.fill_bytes(kPoisonByte);
    if (c.fp8) {
      GemvFp8Params g;
      g.w = d_w.get();
      g.w_scale = d_ws.get();
      g.x = d_x.get();
      g.x_scale = d_xs.get();
      g.y = d_y.get();
      g.M = M;
      g.N = c.N;
      g.K = c.K;
      g.out_bf16 = c.out_bf16;
      launch_gemv_fp8(g, nullptr);
    } else {
      GemvBf16Params g;
      g.w = reinterpret_cast<const __nv_bfloat16*>(d_w.get());
      g.x = reinterpret_cast<const __nv_bfloat16*>(d_x.get());
      g.y = d_y.get();
      g.M = M;
      g.N = c.N;
      g.K = c.K;
      g.out_bf16 = c.out_bf16;
      launch_gemv_bf16(g, nullptr);
    }
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<uint8_t> gemv(bytes.size());
    DSV4_CUDA_CHECK(cudaMemcpy(gemv.data(), d_y.get(), gemv.size(), cudaMemcpyDeviceToHost));
    const double gamma = gamma_for(c.fp8, MatmulPath::kSkinny, c.K) + (64 + c.K / 16.0) * kU;
    std::vector<float> got;
    std::vector<double> ref, budget;
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < c.N; ++n) {
        double b;
        const double r = ref_at(m, n, gamma, &b);
        got.push_back(as_float(bytes, size_t(m) * c.N + n));
        ref.push_back(as_float(gemv, size_t(m) * c.N + n));
        budget.push_back(b + (c.out_bf16 ? kBf16HalfUlp * std::fabs(r) : 0));  // both outputs rounded
      }
    expect_parity(cat("matmul vs gemv ", c.name, " M=", M), got, ref, budget);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MatmulTest,
    ::testing::Values(Shape{"fp8 wq_a (Flash)", true, 1024, 4096, true},
                      Shape{"fp8 wq_b (Flash)", true, 32768, 1024, true},
                      Shape{"fp8 wkv (Flash)", true, 512, 4096, true},
                      Shape{"fp8 wo_b (Flash)", true, 4096, 8192, true},
                      Shape{"fp8 shared w1 (Flash)", true, 2048, 4096, true},
                      Shape{"fp8 shared w2 (Flash)", true, 4096, 2048, true},
                      Shape{"fp8 indexer wq_b (Flash)", true, 8192, 1024, true},
                      Shape{"fp8 wq_a (nano) f32", true, 256, 256, false},   // FP32 out
                      Shape{"fp8 wq_b (nano)", true, 1024, 256, true},
                      Shape{"fp8 wo_b (nano)", true, 256, 128, true},        // one K block
                      Shape{"fp8 odd N", true, 129, 384, true},              // partial warp tile and block
                      Shape{"fp8 12288x1024", true, 12288, 1024, true},      // the wgmma kernel's cluster of 4
                      Shape{"bf16 router (Flash)", false, 256, 4096, false},
                      Shape{"bf16 compressor wkv (CSA)", false, 1024, 4096, false},
                      Shape{"bf16 weights_proj (Flash)", false, 64, 4096, false},
                      Shape{"bf16 weights_proj (nano)", false, 4, 256, false},
                      Shape{"bf16 linear (nano) bf16 out", false, 256, 256, true},
                      Shape{"bf16 odd N", false, 77, 192, false}),           // K % 128 = 64
    [](const ::testing::TestParamInfo<Shape>& i) {
      std::string s = i.param.name;
      for (char& ch : s)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return s;
    });

// matmul_pair (two linears of the same activations): one launch where both are rule-1b shapes
// with one split, else two calls; either way each output equals matmul's bit for bit, at every
// row count, on fresh random data into poisoned outputs (matmul itself is checked against the
// dequantised product above).
class MatmulPairTest : public CudaOpTest {};

TEST_F(MatmulPairTest, EachOutputIsMatmulsBitForBit) {
  struct Case {
    int N_a, N_b, K;
    bool one_launch;  // at M <= 128
  };
  for (const Case cs : {Case{512, 1024, 4096, true},     // Flash's wkv beside wq_a
                        Case{2048, 2048, 4096, true},    // the shared expert's w1 beside w3
                        Case{200, 1024, 4096, true},     // a's last tile partial: b's tiles start after it
                        Case{512, 4096, 4096, false}}) {  // b is not a wgmma shape: two calls
    const int Mmax = 129, nkb = cs.K / 128;
    const auto x = random_e4m3(size_t(Mmax) * cs.K), xs = random_e8m0(size_t(Mmax) * nkb, 8);
    DeviceBuffer<uint8_t> d_x(x), d_xs(xs);
    struct Side {
      int N;
      DeviceBuffer<uint8_t> w, ws, y_pair, y_alone;
    };
    Side a{cs.N_a}, b{cs.N_b};
    for (Side* s : {&a, &b}) {
      s->w = DeviceBuffer<uint8_t>(random_e4m3(size_t(s->N) * cs.K));
      s->ws = DeviceBuffer<uint8_t>(random_e8m0(size_t((s->N + 127) / 128) * nkb, 8));
      s->y_pair = DeviceBuffer<uint8_t>(size_t(Mmax) * s->N * 2);
      s->y_alone = DeviceBuffer<uint8_t>(size_t(Mmax) * s->N * 2);
    }
    for (const int M : {1, 7, 8, 9, 64, 128, 129}) {
      const auto params = [&](Side& s, DeviceBuffer<uint8_t>& y) {
        y.fill_bytes(kPoisonByte);
        MatmulParams p;
        p.w = s.w.get();
        p.w_scale = s.ws.get();
        p.x = d_x.get();
        p.x_scale = d_xs.get();
        p.y = y.get();
        p.M = M;
        p.N = s.N;
        p.K = cs.K;
        return p;
      };
      const bool one = matmul_pair(params(a, a.y_pair), params(b, b.y_pair), nullptr);
      matmul(params(a, a.y_alone), nullptr);
      matmul(params(b, b.y_alone), nullptr);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      const std::string what = cat("N_a=", cs.N_a, " N_b=", cs.N_b, " K=", cs.K, " M=", M);
      EXPECT_EQ(one, cs.one_launch && M <= matmul_skinny_max_rows(true)) << what;
      for (const Side* s : {&a, &b})  // rows past M: the same poison in both
        EXPECT_EQ(s->y_pair.download(), s->y_alone.download()) << what << ": the N=" << s->N << " output";
    }
  }
}

TEST(MatmulArgs, RejectsFp8WeightsWithoutActivationScales) {
  if (!device_available()) {
    GTEST_SKIP() << "no CUDA device";
  }
  DeviceBuffer<uint8_t> w(128 * 128), ws(1), x(128);
  DeviceBuffer<uint16_t> y(128);
  MatmulParams p;
  p.w = w.get();
  p.w_scale = ws.get();
  p.x = x.get();
  p.y = y.get();
  p.M = 1;
  p.N = 128;
  p.K = 128;
  EXPECT_THROW(matmul(p, nullptr), InternalError);
  p.M = 0;  // an empty batch enqueues nothing and checks nothing else
  p.x_scale = nullptr;
  EXPECT_NO_THROW(matmul(p, nullptr));
}

}  // namespace
}  // namespace dsv4::cuda::test
