// Parity of kernels/rmsnorm.cu against a double-precision RMSNorm and, for the fused FP8 1×128
// quantisation, bitwise against the scalar quantiser of util/float_formats.h (§12); the fused
// RoPE bitwise against rope.cu.
#include <cmath>
#include <vector>

#include "cuda/kernels/rmsnorm.cuh"
#include "cuda/kernels/rope.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

struct RmsNormCase {
  int rows, dim;
  bool weighted, quant;
};

class RmsNormTest : public CudaOpTest, public ::testing::WithParamInterface<RmsNormCase> {};

TEST_P(RmsNormTest, MatchesReference) {
  const auto c = GetParam();
  const float eps = 1e-6f;
  // Rows with very different scales: the norm must not depend on magnitude.
  std::vector<float> x(size_t(c.rows) * c.dim);
  for (int r = 0; r < c.rows; ++r) {
    const float mag = std::ldexp(1.0f, uniform_int(-6, 6));
    for (int i = 0; i < c.dim; ++i) x[size_t(r) * c.dim + i] = normal(mag);
  }
  const auto x_bf = to_bf16(x);
  const auto w_bf = to_bf16(normals(size_t(c.dim), 0.5f));
  DeviceBuffer<uint16_t> d_x(x_bf), d_w(w_bf), d_y(x_bf.size());
  DeviceBuffer<uint8_t> d_q(c.quant ? x_bf.size() : 0), d_s(c.quant ? x_bf.size() / kActBlockSize : 0);
  DeviceBuffer<uint16_t> d_fake(c.quant ? x_bf.size() : 0);
  d_y.fill_bytes(kPoisonByte);
  d_q.fill_bytes(kPoisonByte);
  d_s.fill_bytes(kPoisonByte);
  d_fake.fill_bytes(kPoisonByte);

  RmsNormParams p;
  p.x = bf16_ptr(d_x);
  p.weight = c.weighted ? bf16_ptr(d_w) : nullptr;
  p.y = bf16_ptr(d_y);
  p.q = c.quant ? d_q.get() : nullptr;
  p.q_scale = c.quant ? d_s.get() : nullptr;
  p.fake = c.quant ? bf16_ptr(d_fake) : nullptr;
  p.n_rows = c.rows;
  p.dim = c.dim;
  p.eps = eps;
  launch_rmsnorm(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto y = from_bf16(d_y.download());

  // Budget: FP32 Σx² over ≤ dim/256 + 8 + 5 sequential adds (thread, warp tree, 8 warps; the
  // vector kernels: ≤ dim/256 + 1 per element position, 3 + 5 tree levels, 8 warps for block
  // rows), rsqrtf ≤ 2 ulp, two products: relative δ ≤ (depth/2 + 6)·u before the final BF16
  // rounding (half ulp).
  const double depth = c.dim / 256.0 + 13;
  const double delta = (depth / 2 + 6) * kF32Unit;
  std::vector<double> ref(y.size()), budget(y.size());
  const auto xf = from_bf16(x_bf);
  const auto wf = from_bf16(w_bf);
  for (int r = 0; r < c.rows; ++r) {
    double ss = 0;
    for (int i = 0; i < c.dim; ++i) ss += double(xf[size_t(r) * c.dim + i]) * xf[size_t(r) * c.dim + i];
    const double inv = 1.0 / std::sqrt(ss / c.dim + eps);
    for (int i = 0; i < c.dim; ++i) {
      const size_t k = size_t(r) * c.dim + i;
      ref[k] = xf[k] * inv * (c.weighted ? wf[size_t(i)] : 1.0);
      budget[k] = std::fabs(ref[k]) * (kBf16HalfUlp * (1 + delta) + delta) + 1e-30;
    }
  }
  expect_parity(cat("rmsnorm y rows=", c.rows, " dim=", c.dim, c.weighted ? " w" : " no-w"), y, ref, budget);
  {  // In place (y aliases x, as the step calls it): the same bytes.
    RmsNormParams ip = p;
    ip.y = bf16_ptr(d_x);
    ip.q = ip.q_scale = nullptr;
    ip.fake = nullptr;
    const auto y_bytes = d_y.download();
    launch_rmsnorm(ip, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_TRUE(d_x.download() == y_bytes) << "in-place RMSNorm differs from out-of-place";
  }

  if (c.quant) {
    // The quantiser must see exactly the BF16 y it wrote: derive the expected bytes from it.
    const int nb = c.dim / int(kActBlockSize);
    std::vector<uint8_t> q_ref(y.size()), s_ref(size_t(c.rows) * nb);
    for (int r = 0; r < c.rows; ++r)
      for (int b = 0; b < nb; ++b) {
        const float* blk = y.data() + size_t(r) * c.dim + size_t(b) * kActBlockSize;
        float amax = 0;
        for (int i = 0; i < kActBlockSize; ++i) amax = std::max(amax, std::fabs(blk[i]));
        const uint8_t sb = ue8m0_scale_for(amax, kE4M3Max, kActAmaxFloor);
        s_ref[size_t(r) * nb + b] = sb;
        const float s = e8m0_to_f32(sb);
        for (int i = 0; i < kActBlockSize; ++i)
          q_ref[size_t(r) * c.dim + size_t(b) * kActBlockSize + i] = f32_to_e4m3(blk[i] / s);
      }
    expect_bytes_equal(cat("rmsnorm q_scale rows=", c.rows, " dim=", c.dim), d_s.download(), s_ref);
    expect_bytes_equal(cat("rmsnorm q rows=", c.rows, " dim=", c.dim), d_q.download(), q_ref);
    // And the dequantised values are the quant module's fake-quant of y (§12, 1×128 blocks).
    std::vector<float> rt = y;
    fp8_roundtrip_blocks(rt.data(), int64_t(rt.size()), kActBlockSize);
    const auto q = d_q.download(), s = d_s.download();
    int64_t n_diff = 0;
    for (size_t k = 0; k < rt.size(); ++k)
      n_diff += e4m3_to_f32(q[k]) * e8m0_to_f32(s[k / kActBlockSize]) != rt[k];
    EXPECT_EQ(n_diff, 0) << "dequantised q differs from fp8_roundtrip_blocks";
    // The fake-quant output is those values in BF16 (exact: E4M3 × a power of two).
    std::vector<uint16_t> fake_ref(rt.size());
    for (size_t k = 0; k < rt.size(); ++k) fake_ref[k] = f32_to_bf16(rt[k]);
    EXPECT_TRUE(d_fake.download() == fake_ref) << "fake-quant BF16 output differs from q·s";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormTest,
                         ::testing::Values(RmsNormCase{1, 4096, true, true},     // Flash attn/ffn norm, decode
                                           RmsNormCase{3, 1024, true, true},     // q_norm (Q = 1024)
                                           RmsNormCase{5, 7168, true, true},     // Pro hidden
                                           RmsNormCase{2, 128, true, true},      // one block
                                           RmsNormCase{17, 384, false, true},    // odd rows, unweighted
                                           RmsNormCase{192, 512, false, false},  // 3 tokens × 64 heads q_b_norm
                                           RmsNormCase{7, 129, true, false},     // odd width
                                           RmsNormCase{1, 1, true, false},       // degenerate
                                           RmsNormCase{4, 4095, true, false}));  // tail chunk

// The norm with RoPE (RmsNormParams::pos) writes the bytes of the norm followed by rope.cu, whose
// own tests hold each against its reference: in one launch for warp rows, in two elsewhere.
struct RmsNormRopeCase {
  int tokens, heads, dim;
  bool weighted;
};

class RmsNormRopeTest : public CudaOpTest, public ::testing::WithParamInterface<RmsNormRopeCase> {};

TEST_P(RmsNormRopeTest, EqualsNormThenRope) {
  const auto c = GetParam();
  constexpr int kRopeDim = 64;
  const int rows = c.tokens * c.heads;
  const auto x_bf = to_bf16(normals(size_t(rows) * c.dim, 2.0f));
  const auto w_bf = to_bf16(normals(size_t(c.dim), 0.5f));
  std::vector<int32_t> pos(size_t(c.tokens));
  for (auto& t : pos) t = uniform_int(1, (1 << 20) - 1);
  const auto freq = rope_inv_freq(RopeParams{}, kRopeDim);
  DeviceBuffer<uint16_t> d_x(x_bf), d_w(w_bf), d_ref(x_bf.size()), d_y(x_bf.size()), d_in_place(x_bf);
  DeviceBuffer<int32_t> d_pos(pos);
  DeviceBuffer<float> d_freq(freq);
  d_ref.fill_bytes(kPoisonByte);
  d_y.fill_bytes(kPoisonByte);

  RmsNormParams p;
  p.x = bf16_ptr(d_x);
  p.weight = c.weighted ? bf16_ptr(d_w) : nullptr;
  p.y = bf16_ptr(d_ref);
  p.n_rows = rows;
  p.dim = c.dim;
  launch_rmsnorm(p, nullptr);
  RopeApplyParams r;
  r.x = bf16_ptr(d_ref);
  r.pos = d_pos.get();
  r.inv_freq = d_freq.get();
  r.n_rows = c.tokens;
  r.n_heads = c.heads;
  r.head_dim = c.dim;
  r.rope_dim = kRopeDim;
  r.row_stride = int64_t(c.heads) * c.dim;
  launch_rope(r, nullptr);

  p.y = bf16_ptr(d_y);
  p.pos = d_pos.get();
  p.inv_freq = d_freq.get();
  p.rope_dim = kRopeDim;
  p.rows_per_pos = c.heads;
  launch_rmsnorm(p, nullptr);
  p.x = p.y = bf16_ptr(d_in_place);  // as the step calls it
  launch_rmsnorm(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto ref = d_ref.download();
  // How many elements differ, and the first of them by row and column.
  const auto check = [&](const std::vector<uint16_t>& got, const char* what) {
    size_t n_diff = 0, first = 0;
    for (size_t k = 0; k < got.size(); ++k)
      if (got[k] != ref[k] && n_diff++ == 0) first = k;
    if (n_diff == 0) return;
    ADD_FAILURE() << what << " differs from the norm, then rope, in " << n_diff << " elements; the first at row "
                  << first / size_t(c.dim) << " column " << first % size_t(c.dim) << ": " << bf16_to_f32(got[first])
                  << " against " << bf16_to_f32(ref[first]);
  };
  check(d_y.download(), "norm+rope");
  check(d_in_place.download(), "in-place norm+rope");
}

INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormRopeTest,
                         ::testing::Values(RmsNormRopeCase{3, 64, 512, false},   // Flash q heads: one launch
                                           RmsNormRopeCase{5, 1, 512, true},     // kv: one launch
                                           RmsNormRopeCase{2, 3, 72, true},      // rope slice from element 8
                                           RmsNormRopeCase{2, 1, 4096, true},    // block rows: two launches
                                           RmsNormRopeCase{3, 2, 130, false}));  // odd slice start: two launches

}  // namespace
}  // namespace dsv4::cuda::test
