// Parity of kernels/gemv_mxfp4.cu (routed-expert FP4 GEMV over a selection list, MXFP4 and
// NVFP4 weights) against a double-precision product of the scalar dequantisation
// (WeightMatrix::dequant_rows: §11.3 MXFP4, §11.6 NVFP4).
#include <algorithm>
#include <cmath>

#include "cuda/kernels/gemv_mxfp4.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

using Fmt = ExpertWeightFormat;

struct Fp4Case {
  Fmt format;
  int n_experts, N, K;
  std::vector<int32_t> sel;  // expert of each selection; −1 = masked slot
  int sel_per_x;             // selection s reads x row s / sel_per_x
  bool out_bf16;
};

class GemvMxfp4Test : public CudaOpTest, public ::testing::WithParamInterface<Fp4Case> {};

TEST_P(GemvMxfp4Test, MatchesDequantisedProduct) {
  const auto& c = GetParam();
  const bool nv = c.format == Fmt::kNVFP4;
  const int n_sel = int(c.sel.size()), n_x = (n_sel + c.sel_per_x - 1) / c.sel_per_x;
  const int64_t block = nv ? kNVFP4BlockSize : kMXFP4BlockSize;
  const size_t rows = size_t(c.n_experts) * c.N, expert_bytes = size_t(c.N) * c.K / 2,
               expert_scales = size_t(c.N) * c.K / size_t(block);
  // Every E2M1 code (both zeros, ±6) appears: raw random bytes. MXFP4 scales like real experts
  // (~2^-8 spread); NVFP4 scales over the whole E4M3 grid with a per-expert global ~ amax/(6·448).
  std::vector<uint8_t> w(rows * c.K / 2);
  for (auto& b : w) b = uint8_t(uniform_int(0, 255));
  const auto ws = nv ? random_e4m3(rows * c.K / size_t(block)) : random_e8m0(rows * c.K / size_t(block), 6);
  std::vector<float> gs(size_t(c.n_experts));
  for (auto& g : gs) g = uniform(0x1p-12f, 0x1p-6f);
  const auto x = random_e4m3(size_t(n_x) * c.K), xs = random_e8m0(size_t(n_x) * c.K / kActBlockSize, 8);
  DeviceBuffer<uint8_t> d_w(w), d_ws(ws), d_x(x), d_xs(xs);
  DeviceBuffer<float> d_gs(gs);
  DeviceBuffer<int32_t> d_sel(c.sel);
  DeviceBuffer<float> d_y32(c.out_bf16 ? 0 : size_t(n_sel) * c.N);
  DeviceBuffer<uint16_t> d_y16(c.out_bf16 ? size_t(n_sel) * c.N : 0);
  d_y32.fill_bytes(kPoisonByte);
  d_y16.fill_bytes(kPoisonByte);
  GemvMxfp4Params p;
  p.w = d_w.get();
  p.w_scale = d_ws.get();
  p.global_scale = nv ? d_gs.get() : nullptr;
  p.format = c.format;
  p.expert_idx = d_sel.get();
  p.x = d_x.get();
  p.x_scale = d_xs.get();
  p.sel_per_x = c.sel_per_x;
  p.y = c.out_bf16 ? static_cast<void*>(d_y16.get()) : static_cast<void*>(d_y32.get());
  p.n_sel = n_sel;
  p.n_experts = c.n_experts;
  p.N = c.N;
  p.K = c.K;
  p.out_bf16 = c.out_bf16;
  launch_gemv_mxfp4(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto y = c.out_bf16 ? from_bf16(d_y16.download()) : d_y32.download();

  // Budget as gemv_fp8: chunk (32) + K/1024 + 5 adds ≤ 64 + K/16; the 2^14 fold is exact. NVFP4
  // adds two roundings per term: the kernel's multiply by the global scale after the sum, and the
  // scalar dequant's rounding of e2m1·s·global per weight (quant.cpp).
  const double gamma = (64 + c.K / 16.0 + (nv ? 2 : 0)) * kF32Unit;
  std::vector<double> ref(y.size()), budget(y.size());
  std::vector<float> wr(size_t(c.K));
  for (int s = 0; s < n_sel; ++s) {
    const int e = c.sel[size_t(s)];
    const size_t xo = size_t(s / c.sel_per_x) * c.K;
    WeightMatrix wm;  // one expert: NVFP4's global scale is per expert tensor
    wm.name = cat("test.experts.", e, ".w");
    wm.format = nv ? WeightFormat::kNVFP4 : WeightFormat::kMXFP4;
    wm.rows = c.N;
    wm.cols = c.K;
    wm.data = w.data() + size_t(std::max(e, 0)) * expert_bytes;
    wm.scale = ws.data() + size_t(std::max(e, 0)) * expert_scales;
    wm.global_scale = gs[size_t(std::max(e, 0))];
    for (int n = 0; n < c.N; ++n) {
      const size_t o = size_t(s) * c.N + n;
      if (e < 0) {  // masked slot: defined as 0
        ref[o] = 0;
        budget[o] = 0;
        continue;
      }
      wm.dequant_rows(n, 1, wr.data());
      double acc = 0, sa = 0;
      for (int k = 0; k < c.K; ++k) {
        const double xv = double(e4m3_to_f32(x[xo + k])) * e8m0_to_f32(xs[(xo + k) / kActBlockSize]);
        acc += wr[size_t(k)] * xv;
        sa += std::fabs(wr[size_t(k)] * xv);
      }
      ref[o] = acc;
      budget[o] = gamma * sa * (1 + kBf16HalfUlp) + (c.out_bf16 ? kBf16HalfUlp * std::fabs(acc) : 0) + 1e-30;
    }
  }
  expect_parity(cat("gemv_fp4 ", nv ? "nvfp4" : "mxfp4", " sel=", n_sel, " sel/x=", c.sel_per_x, " N=", c.N,
                    " K=", c.K, c.out_bf16 ? " bf16" : " f32"),
                y, ref, budget);
}

// Three tokens × six picks, in token-major order, with masked slots in two tokens.
const std::vector<int32_t> kThreeTokens = {3, 7, 0, 5, 1, 6, 2, -1, 4, 0, 7, 1, 5, 5, 6, -1, -1, 3};

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemvMxfp4Test,
    ::testing::Values(Fp4Case{Fmt::kMXFP4, 8, 2048, 4096, {3, 7, 0, 5, 1, 6}, 6, true},  // Flash w1/w3, decode
                      Fp4Case{Fmt::kMXFP4, 8, 4096, 2048, {2, 2, 4, 0, 7, 1}, 1, true},  // Flash w2 (repeat expert)
                      Fp4Case{Fmt::kMXFP4, 8, 2048, 4096, kThreeTokens, 6, true},        // w1/w3, T = 3
                      Fp4Case{Fmt::kMXFP4, 8, 1024, 512, kThreeTokens, 1, false},        // w2, T = 3
                      Fp4Case{Fmt::kMXFP4, 4, 129, 256, {3, -1, 0}, 1, false},           // masked slot, odd N
                      Fp4Case{Fmt::kMXFP4, 4, 33, 384, {1, 0, 3, 2, 2, -1, 0, 1, 3, 2}, 4, false},  // last x row partial
                      Fp4Case{Fmt::kMXFP4, 2, 127, 384, {1, 0}, 2, false},
                      Fp4Case{Fmt::kMXFP4, 1, 1, 128, {0}, 1, false},
                      Fp4Case{Fmt::kMXFP4, 3, 3072, 7168, {2, 0}, 2, false},            // Pro w1 (K = 7168)
                      Fp4Case{Fmt::kNVFP4, 8, 2048, 4096, {3, 7, 0, 5, 1, 6}, 6, true},  // Flash w1/w3, decode
                      Fp4Case{Fmt::kNVFP4, 8, 4096, 2048, {2, 2, 4, 0, 7, 1}, 1, true},  // Flash w2
                      Fp4Case{Fmt::kNVFP4, 8, 512, 1024, kThreeTokens, 6, false},        // w1/w3, T = 3
                      Fp4Case{Fmt::kNVFP4, 8, 1024, 512, kThreeTokens, 1, true},         // w2, T = 3
                      Fp4Case{Fmt::kNVFP4, 4, 129, 256, {3, -1, 0}, 1, false},           // masked slot, odd N
                      Fp4Case{Fmt::kNVFP4, 1, 1, 128, {0}, 1, false},
                      Fp4Case{Fmt::kNVFP4, 3, 3072, 7168, {2, 0}, 2, false}));          // Pro w1 (K = 7168)

// An expert index past n_experts must give a visible NaN row, not an out-of-bounds read.
TEST_F(GemvMxfp4Test, OutOfRangeExpertGivesNan) {
  const int N = 8, K = 128;
  for (const Fmt f : {Fmt::kMXFP4, Fmt::kNVFP4}) {
    const int64_t block = f == Fmt::kNVFP4 ? kNVFP4BlockSize : kMXFP4BlockSize;
    DeviceBuffer<uint8_t> d_w(std::vector<uint8_t>(size_t(N) * K / 2, 0x22)),
        d_ws(std::vector<uint8_t>(size_t(N * K / block), f == Fmt::kNVFP4 ? 0x38 : 127)), d_x(random_e4m3(K)),
        d_xs(random_e8m0(1, 2));
    DeviceBuffer<float> d_gs(std::vector<float>{1.0f});
    DeviceBuffer<int32_t> d_sel(std::vector<int32_t>{1});
    DeviceBuffer<float> d_y(N);
    d_y.fill_bytes(0);
    GemvMxfp4Params p;
    p.w = d_w.get();
    p.w_scale = d_ws.get();
    p.global_scale = d_gs.get();
    p.format = f;
    p.expert_idx = d_sel.get();
    p.x = d_x.get();
    p.x_scale = d_xs.get();
    p.y = d_y.get();
    p.n_sel = 1;
    p.n_experts = 1;
    p.N = N;
    p.K = K;
    launch_gemv_mxfp4(p, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    for (float v : d_y.download()) EXPECT_TRUE(std::isnan(v)) << (f == Fmt::kNVFP4 ? "nvfp4" : "mxfp4");
  }
}

}  // namespace
}  // namespace dsv4::cuda::test
