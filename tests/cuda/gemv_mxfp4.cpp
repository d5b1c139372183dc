// Parity of kernels/gemv_mxfp4.cu (routed-expert MXFP4 GEMV over a selection list) against a
// double-precision product of the scalar MXFP4 dequantisation (WeightMatrix::dequant_rows, §11.3).
#include <cmath>

#include "cuda/kernels/gemv_mxfp4.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

struct Mxfp4Case {
  int n_experts, N, K;
  std::vector<int32_t> sel;  // expert of each selection; −1 = masked slot
  bool x_per_sel, out_bf16;
};

class GemvMxfp4Test : public CudaOpTest, public ::testing::WithParamInterface<Mxfp4Case> {};

TEST_P(GemvMxfp4Test, MatchesDequantisedProduct) {
  const auto& c = GetParam();
  const int n_sel = int(c.sel.size()), n_x = c.x_per_sel ? n_sel : 1;
  const size_t rows = size_t(c.n_experts) * c.N;
  // Every E2M1 code (both zeros, ±6) appears: raw random bytes. Scales like real experts: ~2^-8.
  std::vector<uint8_t> w(rows * c.K / 2);
  for (auto& b : w) b = uint8_t(uniform_int(0, 255));
  const auto ws = random_e8m0(rows * c.K / kMXFP4BlockSize, 6);
  const auto x = random_e4m3(size_t(n_x) * c.K), xs = random_e8m0(size_t(n_x) * c.K / kActBlockSize, 8);
  DeviceBuffer<uint8_t> d_w(w), d_ws(ws), d_x(x), d_xs(xs);
  DeviceBuffer<int32_t> d_sel(c.sel);
  DeviceBuffer<float> d_y32(c.out_bf16 ? 0 : size_t(n_sel) * c.N);
  DeviceBuffer<uint16_t> d_y16(c.out_bf16 ? size_t(n_sel) * c.N : 0);
  d_y32.fill_bytes(kPoisonByte);
  d_y16.fill_bytes(kPoisonByte);
  GemvMxfp4Params p;
  p.w = d_w.get();
  p.w_scale = d_ws.get();
  p.expert_idx = d_sel.get();
  p.x = d_x.get();
  p.x_scale = d_xs.get();
  p.x_per_sel = c.x_per_sel;
  p.y = c.out_bf16 ? static_cast<void*>(d_y16.get()) : static_cast<void*>(d_y32.get());
  p.n_sel = n_sel;
  p.n_experts = c.n_experts;
  p.N = c.N;
  p.K = c.K;
  p.out_bf16 = c.out_bf16;
  launch_gemv_mxfp4(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto y = c.out_bf16 ? from_bf16(d_y16.download()) : d_y32.download();

  WeightMatrix wm;
  wm.name = "test.experts.w";
  wm.format = WeightFormat::kMXFP4;
  wm.rows = int64_t(rows);
  wm.cols = c.K;
  wm.data = w.data();
  wm.scale = ws.data();
  // Budget as gemv_fp8: chunk (32) + K/1024 + 5 adds ≤ 64 + K/16; the 2^14 fold is exact.
  const double gamma = (64 + c.K / 16.0) * kF32Unit;
  std::vector<double> ref(y.size()), budget(y.size());
  std::vector<float> wr(size_t(c.K));
  for (int s = 0; s < n_sel; ++s) {
    const int e = c.sel[size_t(s)];
    const size_t xo = c.x_per_sel ? size_t(s) * c.K : 0;
    for (int n = 0; n < c.N; ++n) {
      const size_t o = size_t(s) * c.N + n;
      if (e < 0) {  // masked slot: defined as 0
        ref[o] = 0;
        budget[o] = 0;
        continue;
      }
      wm.dequant_rows(int64_t(e) * c.N + n, 1, wr.data());
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
  expect_parity(cat("gemv_mxfp4 sel=", n_sel, " N=", c.N, " K=", c.K, c.x_per_sel ? " x/sel" : " x shared",
                    c.out_bf16 ? " bf16" : " f32"),
                y, ref, budget);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemvMxfp4Test,
    ::testing::Values(Mxfp4Case{8, 2048, 4096, {3, 7, 0, 5, 1, 6}, false, true},   // Flash w1/w3, decode
                      Mxfp4Case{8, 4096, 2048, {2, 2, 4, 0, 7, 1}, true, true},    // Flash w2 (repeat expert)
                      Mxfp4Case{4, 129, 256, {3, -1, 0}, true, false},             // masked slot, odd N
                      Mxfp4Case{2, 127, 384, {1, 0}, false, false},
                      Mxfp4Case{1, 1, 128, {0}, false, false},
                      Mxfp4Case{3, 3072, 7168, {2, 0}, false, false}));            // Pro w1 (K = 7168)

// An expert index past n_experts must give a visible NaN row, not an out-of-bounds read.
TEST_F(GemvMxfp4Test, OutOfRangeExpertGivesNan) {
  const int N = 8, K = 128;
  DeviceBuffer<uint8_t> d_w(std::vector<uint8_t>(size_t(N) * K / 2, 0x22)),
      d_ws(std::vector<uint8_t>(size_t(N) * K / 32, 127)), d_x(random_e4m3(K)), d_xs(random_e8m0(1, 2));
  DeviceBuffer<int32_t> d_sel(std::vector<int32_t>{1});
  DeviceBuffer<float> d_y(N);
  d_y.fill_bytes(0);
  GemvMxfp4Params p;
  p.w = d_w.get();
  p.w_scale = d_ws.get();
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
  for (float v : d_y.download()) EXPECT_TRUE(std::isnan(v));
}

}  // namespace
}  // namespace dsv4::cuda::test
