// Parity of kernels/gemv_bf16.cu (router gate, compressor, head linears and BF16 routed experts)
// against a double-precision product of the BF16 inputs.
#include <cmath>

#include "cuda/kernels/gemv_bf16.cuh"
#include "op_parity.h"

namespace dsv4::cuda::test {
namespace {

struct Bf16Case {
  int M, N, K;
  bool out_bf16 = false;
  int sel_per_x = 1;          // y row m reads x row m / sel_per_x (expert mode only)
  int n_experts = 0;          // > 0: expert mode, expert of row m = sel[m] (−1 = masked slot)
  std::vector<int32_t> sel = {};
};

class GemvBf16Test : public CudaOpTest, public ::testing::WithParamInterface<Bf16Case> {};

TEST_P(GemvBf16Test, MatchesReference) {
  const auto& c = GetParam();
  const bool experts = c.n_experts > 0;
  ASSERT_TRUE(!experts || int(c.sel.size()) == c.M);
  const int n_x = (c.M + c.sel_per_x - 1) / c.sel_per_x, n_w = experts ? c.n_experts : 1;
  const auto w = to_bf16(normals(size_t(n_w) * c.N * c.K, 0.05f)), x = to_bf16(normals(size_t(n_x) * c.K, 2.0f));
  DeviceBuffer<uint16_t> d_w(w), d_x(x);
  DeviceBuffer<int32_t> d_sel(c.sel);
  DeviceBuffer<float> d_y32(c.out_bf16 ? 0 : size_t(c.M) * c.N);
  DeviceBuffer<uint16_t> d_y16(c.out_bf16 ? size_t(c.M) * c.N : 0);
  d_y32.fill_bytes(kPoisonByte);
  d_y16.fill_bytes(kPoisonByte);
  GemvBf16Params p;
  p.w = bf16_ptr(d_w);
  p.x = bf16_ptr(d_x);
  p.y = c.out_bf16 ? static_cast<void*>(d_y16.get()) : static_cast<void*>(d_y32.get());
  p.M = c.M;
  p.N = c.N;
  p.K = c.K;
  p.expert_idx = experts ? d_sel.get() : nullptr;
  p.n_experts = c.n_experts;
  p.sel_per_x = c.sel_per_x;
  p.out_bf16 = c.out_bf16;
  launch_gemv_bf16(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto y = c.out_bf16 ? from_bf16(d_y16.download()) : d_y32.download();
  const auto wf = from_bf16(w), xf = from_bf16(x);
  // Budget: ≤ 8 (chunk) + K/256 (chunks per lane) + 5 (warp) adds, bounded by 64 + K/16; BF16
  // products are exact in FP32. BF16 output adds half an ulp.
  const double gamma = (64 + c.K / 16.0) * kF32Unit;
  std::vector<double> ref(y.size()), budget(y.size());
  for (int m = 0; m < c.M; ++m) {
    const int e = experts ? c.sel[size_t(m)] : 0;
    const float* xr = xf.data() + size_t(m / c.sel_per_x) * c.K;
    for (int n = 0; n < c.N; ++n) {
      const size_t o = size_t(m) * c.N + n;
      if (e < 0) {  // masked slot: defined as 0
        ref[o] = 0;
        budget[o] = 0;
        continue;
      }
      const float* wr = wf.data() + (size_t(e) * c.N + n) * c.K;
      double s = 0, sa = 0;
      for (int k = 0; k < c.K; ++k) {
        const double t = double(wr[k]) * xr[k];
        s += t;
        sa += std::fabs(t);
      }
      ref[o] = s;
      budget[o] = gamma * sa * (1 + kBf16HalfUlp) + (c.out_bf16 ? kBf16HalfUlp * std::fabs(s) : 0) + 1e-30;
    }
  }
  expect_parity(cat("gemv_bf16 M=", c.M, " N=", c.N, " K=", c.K, " sel/x=", c.sel_per_x,
                    experts ? cat(" experts=", c.n_experts) : std::string(), c.out_bf16 ? " bf16" : " f32"),
                y, ref, budget);
}

// Three tokens × six picks, token-major, with masked slots and a repeated expert.
const std::vector<int32_t> kThreeTokens = {3, 7, 0, 5, 1, 6, 2, -1, 4, 0, 7, 1, 5, 5, 6, -1, -1, 3};

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemvBf16Test,
    ::testing::Values(Bf16Case{1, 256, 4096},    // Flash router gate
                      Bf16Case{3, 384, 7168},    // Pro router gate
                      Bf16Case{1, 1024, 4096},   // CSA compressor wkv
                      Bf16Case{2, 129, 264},     // odd N, K % 128 != 0
                      Bf16Case{1, 1, 8},
                      Bf16Case{8, 513, 1024},
                      Bf16Case{5, 300, 512, true},     // BF16 output
                      // BF16-checkpoint routed experts (§8.2): w1/w3 of one token, k = 6.
                      Bf16Case{6, 2048, 4096, true, 6, 8, {3, 7, 0, 5, 1, 6}},
                      Bf16Case{6, 4096, 2048, false, 1, 8, {2, 2, 4, 0, 7, 1}},  // w2, repeated expert
                      Bf16Case{18, 256, 512, false, 6, 8, kThreeTokens},          // w1/w3, T = 3
                      Bf16Case{18, 512, 256, true, 1, 8, kThreeTokens},           // w2, T = 3
                      Bf16Case{3, 129, 264, false, 1, 4, {3, -1, 0}},             // masked slot, odd N
                      Bf16Case{7, 200, 256, false, 3, 4, {1, 0, 3, 3, -1, 2, 0}},  // last x row partial
                      Bf16Case{1, 1, 8, false, 1, 1, {0}}));

// An expert index past n_experts must give a visible NaN row, not an out-of-bounds read.
TEST_F(GemvBf16Test, OutOfRangeExpertGivesNan) {
  const int N = 8, K = 64;
  DeviceBuffer<uint16_t> d_w(to_bf16(normals(size_t(N) * K))), d_x(to_bf16(normals(K)));
  DeviceBuffer<int32_t> d_sel(std::vector<int32_t>{0, 1});
  DeviceBuffer<float> d_y(size_t(2) * N);
  d_y.fill_bytes(0);
  GemvBf16Params p;
  p.w = bf16_ptr(d_w);
  p.x = bf16_ptr(d_x);
  p.y = d_y.get();
  p.M = 2;
  p.N = N;
  p.K = K;
  p.expert_idx = d_sel.get();
  p.n_experts = 1;
  p.sel_per_x = 2;
  launch_gemv_bf16(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto y = d_y.download();
  for (int n = 0; n < N; ++n) {
    EXPECT_TRUE(std::isfinite(y[size_t(n)])) << n;       // expert 0 is in range
    EXPECT_TRUE(std::isnan(y[size_t(N + n)])) << N + n;  // expert 1 is not
  }
}

}  // namespace
}  // namespace dsv4::cuda::test
