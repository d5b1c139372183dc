// Parity of kernels/swiglu.cu against a double-precision clamped SwiGLU (§8.2–§8.3), and its
// fused FP8 quantisation bitwise against util/float_formats.h.
#include <cmath>

#include "cuda/kernels/swiglu.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

struct SwigluCase {
  int rows, I;
  bool weighted, quant;
};

class SwigluTest : public CudaOpTest, public ::testing::WithParamInterface<SwigluCase> {};

TEST_P(SwigluTest, MatchesReference) {
  const auto c = GetParam();
  const float limit = 10.0f;  // swiglu_limit
  const size_t n = size_t(c.rows) * c.I;
  // σ = 8: a good share of g and v lies beyond ±10, so both clamps are exercised.
  auto gn = normals(n, 8.0f), vn = normals(n, 8.0f);
  gn[0] = 12.5f;  // every case, even n = 1, crosses both clamps at least once
  vn[0] = -17.0f;
  const auto g = to_bf16(gn), v = to_bf16(vn);
  std::vector<float> wr(size_t(c.rows));
  for (auto& w : wr) w = uniform(0.05f, 1.5f);
  DeviceBuffer<uint16_t> d_g(g), d_v(v), d_h(n);
  DeviceBuffer<float> d_wr(wr);
  DeviceBuffer<uint8_t> d_q(c.quant ? n : 0), d_s(c.quant ? n / kActBlockSize : 0);
  d_h.fill_bytes(kPoisonByte);
  d_q.fill_bytes(kPoisonByte);
  d_s.fill_bytes(kPoisonByte);
  SwigluParams p;
  p.gate = bf16_ptr(d_g);
  p.up = bf16_ptr(d_v);
  p.row_weight = c.weighted ? d_wr.get() : nullptr;
  p.h = bf16_ptr(d_h);
  p.q = c.quant ? d_q.get() : nullptr;
  p.q_scale = c.quant ? d_s.get() : nullptr;
  p.n_rows = c.rows;
  p.I = c.I;
  p.limit = limit;
  launch_swiglu(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto h = from_bf16(d_h.download());
  const auto gf = from_bf16(g), vf = from_bf16(v);
  // Budget: expf ≤ 2 ulp, one add, one division, two or three products: ≤ 8u relative, then BF16.
  std::vector<double> ref(n), budget(n);
  int64_t n_clamped = 0;
  for (size_t k = 0; k < n; ++k) {
    const double gc = std::min<double>(gf[k], limit), vc = std::clamp<double>(vf[k], -limit, limit);
    n_clamped += (gf[k] > limit) + (std::fabs(vf[k]) > limit);
    ref[k] = gc / (1 + std::exp(-gc)) * vc * (c.weighted ? wr[k / size_t(c.I)] : 1.0);
    budget[k] = std::fabs(ref[k]) * (kBf16HalfUlp * (1 + 8 * kF32Unit) + 8 * kF32Unit) + 1e-30;
  }
  EXPECT_GE(n_clamped, 2) << "inputs never reached the clamp";
  expect_parity(cat("swiglu rows=", c.rows, " I=", c.I, c.weighted ? " weighted" : ""), h, ref, budget);

  if (c.quant) {
    const int nb = c.I / int(kActBlockSize);
    std::vector<uint8_t> q_ref(n), s_ref(size_t(c.rows) * nb);
    for (size_t b = 0; b < s_ref.size(); ++b) {
      const float* blk = h.data() + b * kActBlockSize;
      float amax = 0;
      for (int i = 0; i < kActBlockSize; ++i) amax = std::max(amax, std::fabs(blk[i]));
      s_ref[b] = ue8m0_scale_for(amax, kE4M3Max, kActAmaxFloor);
      for (int i = 0; i < kActBlockSize; ++i) q_ref[b * kActBlockSize + i] = f32_to_e4m3(blk[i] / e8m0_to_f32(s_ref[b]));
    }
    expect_bytes_equal(cat("swiglu q_scale rows=", c.rows, " I=", c.I), d_s.download(), s_ref);
    expect_bytes_equal(cat("swiglu q rows=", c.rows, " I=", c.I), d_q.download(), q_ref);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, SwigluTest,
                         ::testing::Values(SwigluCase{6, 2048, true, true},    // Flash routed experts, decode
                                           SwigluCase{1, 2048, false, true},   // shared expert
                                           SwigluCase{6, 3072, true, true},    // Pro
                                           SwigluCase{3, 129, true, false},    // odd width
                                           SwigluCase{1, 1, false, false}));

}  // namespace
}  // namespace dsv4::cuda::test
