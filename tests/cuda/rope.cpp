// Parity of kernels/rope.cu: the frequency tables against the §4.4 formulas (incl. the worked
// YaRN numbers), the rotation against a double-precision reference at random positions up to
// 2^20, untouched NoPE dims, and inverse(forward(x)) ≈ x.
#include <cmath>
#include <numbers>

#include "cuda/kernels/rope.cuh"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

constexpr int kRopeDim = 64;  // qk_rope_head_dim

RopeParams main_table() { return RopeParams{}; }  // θ = 10000, no YaRN
RopeParams compress_table() {
  RopeParams t;
  t.theta = 160000;
  t.yarn = true;
  t.factor = 16;
  t.original_max_position = 65536;
  t.beta_fast = 32;
  t.beta_slow = 1;
  return t;
}

TEST(RopeTable, MatchesArchitectureFormulas) {
  const auto m = rope_inv_freq(main_table(), kRopeDim);
  const auto c = rope_inv_freq(compress_table(), kRopeDim);
  ASSERT_EQ(m.size(), 32u);
  ASSERT_EQ(c.size(), 32u);
  for (int i = 0; i < 32; ++i) {
    const double w_main = std::pow(10000.0, -2.0 * i / 64), w_c = std::pow(160000.0, -2.0 * i / 64);
    EXPECT_NEAR(m[size_t(i)], w_main, w_main * 1e-7) << i;
    // §4.4 worked numbers for θ = 160000: pairs 0–15 unchanged, 25–31 divided by 16, pair 20
    // scaled by 0.53125 (ramp 0.5 between lo = 15 and hi = 25).
    double expect = w_c;
    if (i >= 25) expect = w_c / 16;
    else if (i > 15) expect = w_c * (1 - (i - 15) / 10.0) + w_c / 16 * ((i - 15) / 10.0);
    EXPECT_NEAR(c[size_t(i)], expect, expect * 1e-7) << i;
  }
  EXPECT_NEAR(c[20] / std::pow(160000.0, -40.0 / 64), 0.53125, 1e-6);
}

struct RopeCase {
  int rows, heads, head_dim;
  bool compress, inverse;
};

class RopeTest : public CudaOpTest, public ::testing::WithParamInterface<RopeCase> {};

TEST_P(RopeTest, MatchesReference) {
  const auto c = GetParam();
  const size_t n = size_t(c.rows) * c.heads * c.head_dim;
  const auto x = to_bf16(normals(n, 3.0f));
  std::vector<int32_t> pos(size_t(c.rows));
  for (auto& t : pos) t = uniform_int(0, (1 << 20) - 1);
  pos[0] = 0;  // identity rotation
  if (c.rows > 1) pos[1] = (1 << 20) - 1;  // max_position_embeddings − 1
  const auto freq = rope_inv_freq(c.compress ? compress_table() : main_table(), kRopeDim);
  DeviceBuffer<uint16_t> d_x(x);
  DeviceBuffer<int32_t> d_pos(pos);
  DeviceBuffer<float> d_freq(freq);
  RopeApplyParams p;
  p.x = bf16_ptr(d_x);
  p.pos = d_pos.get();
  p.inv_freq = d_freq.get();
  p.n_rows = c.rows;
  p.n_heads = c.heads;
  p.head_dim = c.head_dim;
  p.rope_dim = kRopeDim;
  p.row_stride = int64_t(c.heads) * c.head_dim;
  p.inverse = c.inverse;
  launch_rope(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto got16 = d_x.download();
  const auto got = from_bf16(got16), xf = from_bf16(x);

  // Reference: the FP32 angle t·ω_i (as the kernel and the reference's FP32 outer product), then
  // cos/sin and the rotation in double. Budget: sincosf and two FP32 products/adds ≤ 4u of
  // |x0|+|x1|, then BF16 half-ulp rounding.
  std::vector<double> ref(n), budget(n);
  std::vector<uint16_t> nope_ref, nope_got;
  for (int r = 0; r < c.rows; ++r)
    for (int h = 0; h < c.heads; ++h) {
      const size_t base = (size_t(r) * c.heads + h) * c.head_dim;
      for (int i = 0; i < c.head_dim - kRopeDim; ++i) {
        ref[base + i] = xf[base + i];
        budget[base + i] = 0;  // NoPE dims: untouched, bit for bit
      }
      for (int i = 0; i < kRopeDim / 2; ++i) {
        const size_t k = base + (c.head_dim - kRopeDim) + 2 * i;
        const float angle = float(pos[size_t(r)]) * freq[size_t(i)];
        const double cs = std::cos(double(angle)), sn = (c.inverse ? -1 : 1) * std::sin(double(angle));
        const double x0 = xf[k], x1 = xf[k + 1];
        ref[k] = x0 * cs - x1 * sn;
        ref[k + 1] = x0 * sn + x1 * cs;
        const double slack = 4 * kF32Unit * (std::fabs(x0) + std::fabs(x1));
        budget[k] = kBf16HalfUlp * (std::fabs(ref[k]) + slack) + slack;
        budget[k + 1] = kBf16HalfUlp * (std::fabs(ref[k + 1]) + slack) + slack;
      }
    }
  expect_parity(cat("rope rows=", c.rows, " heads=", c.heads, " d=", c.head_dim, c.compress ? " yarn" : " main",
                    c.inverse ? " inverse" : ""),
                got, ref, budget);

  // Inverse after forward returns the input up to two roundings (rotation is orthogonal).
  p.inverse = !c.inverse;
  launch_rope(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto back = from_bf16(d_x.download());
  std::vector<double> ref_back(xf.begin(), xf.end()), budget_back(n);
  for (size_t k = 0; k < n; ++k) {
    const size_t pair = k - (k % 2);
    budget_back[k] = 3 * kBf16HalfUlp * (std::fabs(xf[pair]) + std::fabs(xf[pair + 1])) + 1e-30;
  }
  expect_parity("rope inverse∘forward", back, ref_back, budget_back);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeTest,
                         ::testing::Values(RopeCase{1, 64, 512, true, false},   // Flash q, CSA/HCA layer
                                           RopeCase{5, 64, 512, false, true},   // inverse on attention output
                                           RopeCase{3, 1, 512, true, false},    // kv / compressed entry
                                           RopeCase{7, 64, 128, true, false},   // indexer q
                                           RopeCase{2, 128, 512, false, false}, // Pro heads
                                           RopeCase{1, 1, 64, false, true}));   // rope-only head

}  // namespace
}  // namespace dsv4::cuda::test
