// Tests of kernels/moe_combine.cu: the MoE output sum (§8.4) bitwise against an FP32 host sum in
// the reference's order (y = 0; routed outputs by ascending expert id; + shared; BF16 cast), or in
// slot order without expert ids, and against a double sum within a derived budget; routed rows
// read through a permutation (a dispatch plan's grouped order), padding rows = shared only, and a
// pick without an expert = NaN.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>

#include "cuda/kernels/moe_combine.cuh"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

struct MoeCombineCase {
  int T, k, D;
  enum Ids { kNone, kDistinct, kWithRepeats } ids;
  bool permuted = false;  // routed rows stored in a shuffled (grouped) order, read via routed_row
  int n_real = -1;        // >= 0: rows past it are padding (device count)
};

class MoeCombineTest : public CudaOpTest, public ::testing::WithParamInterface<MoeCombineCase> {};

TEST_P(MoeCombineTest, MatchesReferenceOrder) {
  const auto c = GetParam();
  const int n_experts = 256;
  // Rows of magnitudes 2^-20..2^10: far enough apart that FP32 sums round, so the order shows.
  std::vector<float> routed(size_t(c.T) * c.k * c.D), shared(size_t(c.T) * c.D);
  for (size_t r = 0; r < routed.size() / c.D; ++r) {
    const float mag = std::ldexp(1.0f, uniform_int(-20, 10));
    for (int d = 0; d < c.D; ++d) routed[r * c.D + d] = normal(mag);
  }
  for (auto& v : shared) v = normal(std::ldexp(1.0f, uniform_int(-20, 10)));
  const auto routed_bf = to_bf16(routed), shared_bf = to_bf16(shared);
  const auto rf = from_bf16(routed_bf), sf = from_bf16(shared_bf);

  std::vector<int32_t> ids(size_t(c.T) * c.k);
  for (int t = 0; t < c.T; ++t) {
    int32_t* it = ids.data() + size_t(t) * c.k;
    for (int i = 0; i < c.k; ++i) {
      bool again = true;
      while (again) {  // distinct ids per token unless repeats are wanted (a hash table may repeat)
        it[i] = uniform_int(0, n_experts - 1);
        again = c.ids == MoeCombineCase::kDistinct && std::find(it, it + i, it[i]) != it + i;
      }
    }
    if (c.ids == MoeCombineCase::kWithRepeats && c.k >= 2) it[c.k - 1] = it[0];
  }

  // Grouped storage: logical row t·k + i lives at row perm[t·k + i] of the device buffer.
  std::vector<int32_t> perm(size_t(c.T) * c.k);
  std::iota(perm.begin(), perm.end(), 0);
  if (c.permuted) std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<uint16_t> stored(routed_bf.size());
  for (size_t r = 0; r < perm.size(); ++r)
    std::copy(&routed_bf[r * c.D], &routed_bf[r * c.D] + c.D, &stored[size_t(perm[r]) * c.D]);
  const int n_real = c.n_real < 0 ? c.T : c.n_real;
  DeviceBuffer<uint16_t> d_routed(stored), d_shared(shared_bf), d_out(shared_bf.size());
  DeviceBuffer<int32_t> d_ids(ids), d_perm(perm), d_nreal(std::vector<int32_t>{n_real});
  d_out.fill_bytes(kPoisonByte);
  MoeCombineParams p;
  p.routed = bf16_ptr(d_routed);
  p.shared = bf16_ptr(d_shared);
  p.out = bf16_ptr(d_out);
  p.T = c.T;
  p.k = c.k;
  p.D = c.D;
  p.expert_ids = c.ids == MoeCombineCase::kNone ? nullptr : d_ids.get();
  p.routed_row = c.permuted ? d_perm.get() : nullptr;
  p.n_real = c.n_real < 0 ? nullptr : d_nreal.get();
  launch_moe_combine(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto out = d_out.download();

  std::vector<uint16_t> ref(out.size());
  std::vector<float> got(out.size());
  std::vector<double> exact(out.size()), budget(out.size());
  int64_t n_order_sensitive = 0;  // elements where slot order would give another BF16 result
  for (int t = 0; t < c.T; ++t) {
    std::vector<int> order(static_cast<size_t>(c.k));
    std::iota(order.begin(), order.end(), 0);
    if (c.ids != MoeCombineCase::kNone)
      std::stable_sort(order.begin(), order.end(),
                       [&](int a, int b) { return ids[size_t(t) * c.k + a] < ids[size_t(t) * c.k + b]; });
    for (int d = 0; d < c.D; ++d) {
      const size_t o = size_t(t) * c.D + d;
      float y = 0.0f, y_slot = 0.0f;
      double sum = 0, abs_sum = 0;
      for (int j = 0; j < (t < n_real ? c.k : 0); ++j) {  // padding rows: shared only
        y += rf[(size_t(t) * c.k + order[size_t(j)]) * c.D + d];
        const double v = rf[(size_t(t) * c.k + j) * c.D + d];
        y_slot += float(v);
        sum += v;
        abs_sum += std::fabs(v);
      }
      y += sf[o];
      y_slot += sf[o];
      sum += sf[o];
      abs_sum += std::fabs(sf[o]);
      ref[o] = f32_to_bf16(y);
      n_order_sensitive += f32_to_bf16(y_slot) != ref[o] && t < n_real;
      got[o] = bf16_to_f32(out[o]);
      exact[o] = sum;
      // k FP32 additions (each ≤ u of the running |sum| ≤ Σ|v|), then one BF16 rounding.
      budget[o] = kBf16HalfUlp * std::fabs(sum) * (1 + 1e-6) + (c.k + 1) * kF32Unit * abs_sum * (1 + kBf16HalfUlp) +
                  1e-45;
    }
  }
  const std::string tag = cat(" T=", c.T, " k=", c.k, " D=", c.D,
                              c.ids == MoeCombineCase::kNone ? " slot order" : " expert-id order",
                              c.permuted ? " grouped" : "", c.n_real >= 0 ? cat(" n_real=", c.n_real) : "");
  std::printf("[info]   %lld of %zu elements would round differently in slot order\n",
              static_cast<long long>(n_order_sensitive), out.size());
  std::vector<uint8_t> got_b(out.size() * 2), ref_b(out.size() * 2);
  std::memcpy(got_b.data(), out.data(), got_b.size());
  std::memcpy(ref_b.data(), ref.data(), ref_b.size());
  expect_bytes_equal("moe_combine" + tag, got_b, ref_b);
  expect_parity("moe_combine vs double" + tag, got, exact, budget);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MoeCombineTest,
    ::testing::Values(MoeCombineCase{1, 6, 4096, MoeCombineCase::kDistinct},     // Flash decode
                      MoeCombineCase{5, 6, 7168, MoeCombineCase::kDistinct},     // Pro, a few tokens
                      MoeCombineCase{4, 6, 4096, MoeCombineCase::kWithRepeats},  // hash layer repeats
                      MoeCombineCase{3, 8, 129, MoeCombineCase::kNone},          // slot order, odd D
                      MoeCombineCase{2, 16, 1, MoeCombineCase::kDistinct},       // k at its limit, D = 1
                      MoeCombineCase{70000, 1, 3, MoeCombineCase::kNone},        // tokens beyond grid.y
                      MoeCombineCase{0, 6, 4096, MoeCombineCase::kDistinct},     // empty
                      MoeCombineCase{64, 6, 4096, MoeCombineCase::kDistinct, true},       // grouped order
                      MoeCombineCase{9, 6, 4096, MoeCombineCase::kWithRepeats, true, 5},  // + padding rows
                      MoeCombineCase{4, 6, 256, MoeCombineCase::kDistinct, true, 0}));    // all padding

// A real row with a pick that has no expert (the router's −1 for a bad token) sums to NaN: a
// bad token stays visible downstream. Padding rows never read their picks.
TEST_F(MoeCombineTest, PickWithoutExpertIsNan) {
  const int T = 3, k = 4, D = 256;
  const auto routed = to_bf16(normals(size_t(T) * k * D)), shared = to_bf16(normals(size_t(T) * D));
  std::vector<int32_t> rows(size_t(T) * k);
  std::iota(rows.begin(), rows.end(), 0);
  rows[1 * k + 2] = -1;  // row 1, pick 2
  rows[2 * k + 0] = -1;  // row 2 is padding: ignored
  DeviceBuffer<uint16_t> d_routed(routed), d_shared(shared), d_out(shared.size());
  DeviceBuffer<int32_t> d_rows(rows), d_nreal(std::vector<int32_t>{2});
  d_out.fill_bytes(0);
  MoeCombineParams p;
  p.routed = bf16_ptr(d_routed);
  p.shared = bf16_ptr(d_shared);
  p.out = bf16_ptr(d_out);
  p.T = T;
  p.k = k;
  p.D = D;
  p.routed_row = d_rows.get();
  p.n_real = d_nreal.get();
  launch_moe_combine(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto out = from_bf16(d_out.download());
  for (int d = 0; d < D; ++d) {
    EXPECT_TRUE(std::isfinite(out[size_t(d)])) << "row 0";
    EXPECT_TRUE(std::isnan(out[size_t(D + d)])) << "row 1, column " << d;
    EXPECT_EQ(out[size_t(2 * D + d)], bf16_to_f32(shared[size_t(2 * D + d)])) << "padding row 2";
  }
}

}  // namespace
}  // namespace dsv4::cuda::test
