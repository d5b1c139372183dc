// Parity of kernels/gemv_fp8.cu (decode and small-M FP8-block GEMV) against a double-precision
// product of the scalar dequantisation (model/quant.h WeightMatrix::dequant_rows, §11.2).
#include <cmath>

#include "cuda/kernels/gemv_fp8.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

struct GemvCase {
  int M, N, K;
  bool out_bf16;
};

class GemvFp8Test : public CudaOpTest, public ::testing::WithParamInterface<GemvCase> {};

TEST_P(GemvFp8Test, MatchesDequantisedProduct) {
  const auto c = GetParam();
  const int nkb = c.K / int(kFP8BlockSize), nnb = (c.N + int(kFP8BlockSize) - 1) / int(kFP8BlockSize);
  // Random bytes over the whole E4M3 grid (subnormals, ±448) and scales spread over 2^±8.
  const auto w = random_e4m3(size_t(c.N) * c.K), ws = random_e8m0(size_t(nnb) * nkb, 8);
  const auto x = random_e4m3(size_t(c.M) * c.K), xs = random_e8m0(size_t(c.M) * nkb, 8);
  DeviceBuffer<uint8_t> d_w(w), d_ws(ws), d_x(x), d_xs(xs);
  DeviceBuffer<float> d_y32(c.out_bf16 ? 0 : size_t(c.M) * c.N);
  DeviceBuffer<uint16_t> d_y16(c.out_bf16 ? size_t(c.M) * c.N : 0);
  d_y32.fill_bytes(kPoisonByte);
  d_y16.fill_bytes(kPoisonByte);
  GemvFp8Params p;
  p.w = d_w.get();
  p.w_scale = d_ws.get();
  p.x = d_x.get();
  p.x_scale = d_xs.get();
  p.y = c.out_bf16 ? static_cast<void*>(d_y16.get()) : static_cast<void*>(d_y32.get());
  p.M = c.M;
  p.N = c.N;
  p.K = c.K;
  p.out_bf16 = c.out_bf16;
  launch_gemv_fp8(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto y = c.out_bf16 ? from_bf16(d_y16.download()) : d_y32.download();

  WeightMatrix wm;
  wm.name = "test.w";
  wm.format = WeightFormat::kFP8Block;
  wm.rows = c.N;
  wm.cols = c.K;
  wm.data = w.data();
  wm.scale = ws.data();
  std::vector<float> wd(size_t(c.N) * c.K);
  wm.dequant_rows(0, c.N, wd.data());
  std::vector<double> xd(x.size());
  for (size_t i = 0; i < x.size(); ++i) xd[i] = double(e4m3_to_f32(x[i])) * e8m0_to_f32(xs[i / kActBlockSize]);

  // Budget: FP32 partial sums pass through ≤ 16 (chunk) + K/512 (chunks per lane) + 5 (warp tree)
  // adds, bounded here by 64 + K/16, so |err| ≤ (64 + K/16)·u·Σ|w·x| (the scale products are exact
  // powers of two); BF16 output adds half an ulp.
  const double gamma = (64 + c.K / 16.0) * kF32Unit;
  std::vector<double> ref(y.size()), budget(y.size());
  for (int m = 0; m < c.M; ++m)
    for (int n = 0; n < c.N; ++n) {
      double s = 0, sa = 0;
      const float* wr = wd.data() + size_t(n) * c.K;
      const double* xr = xd.data() + size_t(m) * c.K;
      for (int k = 0; k < c.K; ++k) {
        s += wr[k] * xr[k];
        sa += std::fabs(wr[k] * xr[k]);
      }
      ref[size_t(m) * c.N + n] = s;
      budget[size_t(m) * c.N + n] = gamma * sa * (1 + kBf16HalfUlp) + (c.out_bf16 ? kBf16HalfUlp * std::fabs(s) : 0) + 1e-30;
    }
  expect_parity(cat("gemv_fp8 M=", c.M, " N=", c.N, " K=", c.K, c.out_bf16 ? " bf16" : " f32"), y, ref, budget);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemvFp8Test,
                         ::testing::Values(GemvCase{1, 1024, 4096, true},    // Flash wq_a
                                           GemvCase{1, 32768, 1024, true},   // Flash wq_b
                                           GemvCase{1, 4096, 8192, false},   // Flash wo_b
                                           GemvCase{1, 512, 4096, true},     // wkv
                                           GemvCase{1, 129, 128, false},     // one K block, N = 128 + 1
                                           GemvCase{1, 127, 256, false},
                                           GemvCase{1, 1, 128, false},
                                           GemvCase{2, 2048, 4096, true},    // shared expert w1, 2 tokens
                                           GemvCase{3, 513, 1024, false},    // odd M and N
                                           GemvCase{5, 1000, 2048, true},
                                           GemvCase{8, 4096, 2048, false}));  // max batch, w2-like

}  // namespace
}  // namespace dsv4::cuda::test
