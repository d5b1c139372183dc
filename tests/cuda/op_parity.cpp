// Implementation of the op-parity harness (tests/cuda/op_parity.h): fixture, RNG helpers and
// the comparators' report arithmetic.
#include "op_parity.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "cuda/cuda_check.h"
#include "util/float_formats.h"
#include "support/seed.h"

namespace dsv4::cuda::test {

void CudaOpTest::SetUp() {
  if (!device_available()) GTEST_SKIP() << "no CUDA device";
  seed = dsv4::test::seed_for_this_test();  // printed; DSV4_TEST_SEED replays it (support/seed.h)
  rng.seed(seed);
  RecordProperty("seed", std::to_string(seed));
}

std::vector<float> CudaOpTest::normals(size_t n, float sigma) {
  std::vector<float> v(n);
  std::normal_distribution<float> d(0.0f, sigma);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<uint8_t> CudaOpTest::random_e4m3(size_t n) {
  std::vector<uint8_t> v(n);
  std::uniform_int_distribution<int> d(0, 255);
  for (auto& b : v) {
    do b = uint8_t(d(rng)); while ((b & 0x7f) == 0x7f);  // 0x7f / 0xff are NaN
  }
  return v;
}

std::vector<uint8_t> CudaOpTest::random_e8m0(size_t n, int spread) {
  std::vector<uint8_t> v(n);
  std::uniform_int_distribution<int> d(127 - spread, 127 + spread);
  for (auto& b : v) b = uint8_t(d(rng));
  return v;
}

ParityReport expect_parity(const std::string& what, const std::vector<float>& got,
                           const std::vector<double>& ref, const std::vector<double>& budget) {
  ParityReport r;
  EXPECT_EQ(got.size(), ref.size()) << what;
  EXPECT_EQ(budget.size(), ref.size()) << what;
  const size_t n = std::min({got.size(), ref.size(), budget.size()});
  double dot = 0, gg = 0, rr = 0;
  for (size_t i = 0; i < n; ++i) {
    const double g = got[i], e = ref[i];
    if (!std::isfinite(g) || !std::isfinite(e)) {
      const bool same = (std::isnan(g) && std::isnan(e)) || g == e;
      if (!same) {
        if (r.n_nonfinite_mismatch == 0) r.worst_idx = int64_t(i);
        ++r.n_nonfinite_mismatch;
      }
      continue;
    }
    const double err = std::fabs(g - e);
    r.max_abs = std::max(r.max_abs, err);
    if (e != 0) r.max_rel = std::max(r.max_rel, err / std::fabs(e));
    const double share = budget[i] > 0 ? err / budget[i] : (err > 0 ? INFINITY : 0.0);
    if (share > 1) ++r.n_bad;
    if (share > r.worst_share && r.n_nonfinite_mismatch == 0) {
      r.worst_share = share;
      r.worst_idx = int64_t(i);
    }
    dot += g * e;
    gg += g * g;
    rr += e * e;
  }
  r.cosine = (gg > 0 && rr > 0) ? dot / std::sqrt(gg * rr) : (gg == rr ? 1.0 : 0.0);
  std::printf("[parity] %-44s n=%-9zu max_abs=%.3e max_rel=%.3e cos=%.9f worst=%lld share=%.3f%s\n",
              what.c_str(), n, r.max_abs, r.max_rel, r.cosine, static_cast<long long>(r.worst_idx),
              r.worst_share, r.n_nonfinite_mismatch ? " NONFINITE-MISMATCH" : "");
  EXPECT_EQ(r.n_nonfinite_mismatch, 0) << what << ": non-finite (unwritten?) element, first at " << r.worst_idx
                                       << " got=" << (r.worst_idx >= 0 ? got[size_t(r.worst_idx)] : 0.0f);
  EXPECT_EQ(r.n_bad, 0) << what << ": " << r.n_bad << " elements over budget; worst " << r.worst_idx << " got="
                        << (r.worst_idx >= 0 ? got[size_t(r.worst_idx)] : 0.0f)
                        << " ref=" << (r.worst_idx >= 0 ? ref[size_t(r.worst_idx)] : 0.0)
                        << " budget=" << (r.worst_idx >= 0 ? budget[size_t(r.worst_idx)] : 0.0)
                        << " share=" << r.worst_share;
  return r;
}

void expect_bytes_equal(const std::string& what, const std::vector<uint8_t>& got,
                        const std::vector<uint8_t>& ref) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  int64_t n_diff = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != ref[i]) {
      if (first < 0) first = int64_t(i);
      ++n_diff;
    }
  std::printf("[bytes]  %-44s n=%-9zu mismatches=%lld\n", what.c_str(), got.size(), static_cast<long long>(n_diff));
  EXPECT_EQ(n_diff, 0) << what << ": first mismatch at " << first << " got=0x" << std::hex
                       << int(first >= 0 ? got[size_t(first)] : 0) << " ref=0x"
                       << int(first >= 0 ? ref[size_t(first)] : 0);
}

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = f32_to_bf16(v[i]);
  return out;
}

std::vector<float> from_bf16(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_f32(v[i]);
  return out;
}

}  // namespace dsv4::cuda::test
