// Parity of kernels/gemv_bf16.cu (router gate, compressor, head linears) against a
// double-precision product of the BF16 inputs.
#include <cmath>

#include "cuda/kernels/gemv_bf16.cuh"
#include "op_parity.h"

namespace dsv4::cuda::test {
namespace {

struct Bf16Case {
  int M, N, K;
};

class GemvBf16Test : public CudaOpTest, public ::testing::WithParamInterface<Bf16Case> {};

TEST_P(GemvBf16Test, MatchesReference) {
  const auto c = GetParam();
  const auto w = to_bf16(normals(size_t(c.N) * c.K, 0.05f)), x = to_bf16(normals(size_t(c.M) * c.K, 2.0f));
  DeviceBuffer<uint16_t> d_w(w), d_x(x);
  DeviceBuffer<float> d_y(size_t(c.M) * c.N);
  d_y.fill_bytes(kPoisonByte);
  GemvBf16Params p;
  p.w = bf16_ptr(d_w);
  p.x = bf16_ptr(d_x);
  p.y = d_y.get();
  p.M = c.M;
  p.N = c.N;
  p.K = c.K;
  launch_gemv_bf16(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto y = d_y.download();
  const auto wf = from_bf16(w), xf = from_bf16(x);
  // Budget: ≤ 8 (chunk) + K/256 (chunks per lane) + 5 (warp) adds, bounded by 64 + K/16; BF16
  // products are exact in FP32.
  const double gamma = (64 + c.K / 16.0) * kF32Unit;
  std::vector<double> ref(y.size()), budget(y.size());
  for (int m = 0; m < c.M; ++m)
    for (int n = 0; n < c.N; ++n) {
      double s = 0, sa = 0;
      for (int k = 0; k < c.K; ++k) {
        const double t = double(wf[size_t(n) * c.K + k]) * xf[size_t(m) * c.K + k];
        s += t;
        sa += std::fabs(t);
      }
      ref[size_t(m) * c.N + n] = s;
      budget[size_t(m) * c.N + n] = gamma * sa + 1e-30;
    }
  expect_parity(cat("gemv_bf16 M=", c.M, " N=", c.N, " K=", c.K), y, ref, budget);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemvBf16Test,
                         ::testing::Values(Bf16Case{1, 256, 4096},    // Flash router gate
                                           Bf16Case{3, 384, 7168},    // Pro router gate
                                           Bf16Case{1, 1024, 4096},   // CSA compressor wkv
                                           Bf16Case{2, 129, 264},     // odd N, K % 128 != 0
                                           Bf16Case{1, 1, 8},
                                           Bf16Case{8, 513, 1024}));

}  // namespace
}  // namespace dsv4::cuda::test
