// The fused FP4 GEMV (cpu/fp4_linear.h) on fresh random MXFP4 and NVFP4 bytes (every nibble,
// scales across the range, subnormal MXFP4 scales), each vector kernel this host runs (AVX2 and
// AVX-512): bit-identical to expanding each row with the scalar dequantiser and summing in 16
// lanes, which is its contract; within the FP32 summation bound of a double-precision dot of the
// dequantised weights; the same through linear_rows on a thread pool with FP8 activations; a NaN
// MXFP4 scale is the dequantiser's error.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cpu/context.h"
#include "cpu/fp4_linear.h"
#include "cpu/linear.h"
#include "util/error.h"
#include "util/float_formats.h"
#include "support/test_util.h"

namespace dsv4 {
namespace {

struct RandomFp4 {
  std::vector<uint8_t> data, scale;
  WeightMatrix w;
};

// Random bytes, not packer output: every nibble (−0 included) and every scale the format allows
// in a useful range. MXFP4: E8M0 bytes around 2^0 and 1 in 32 the subnormal 2^-127 (byte 0).
// NVFP4: any non-NaN E4M3 byte, times a random global scale.
RandomFp4 random_fp4(test::Rng& rng, WeightFormat f, int64_t rows, int64_t cols) {
  const int64_t block = f == WeightFormat::kMXFP4 ? kMXFP4BlockSize : kNVFP4BlockSize;
  RandomFp4 r;
  r.data.resize(size_t(rows * cols / 2));
  for (uint8_t& b : r.data) b = uint8_t(rng.integer(0, 255));
  r.scale.resize(size_t(rows * cols / block));
  for (uint8_t& b : r.scale) {
    if (f == WeightFormat::kMXFP4) {
      b = rng.integer(0, 31) == 0 ? 0 : uint8_t(rng.integer(127 - 24, 127 + 24));
    } else {
      do b = uint8_t(rng.integer(0, 255));
      while ((b & 0x7F) == 0x7F);
    }
  }
  r.w.name = "layers.0.ffn.experts.0.w1.weight";
  r.w.format = f;
  r.w.rows = rows;
  r.w.cols = cols;
  r.w.data = r.data.data();
  r.w.scale = r.scale.data();
  if (f == WeightFormat::kNVFP4) r.w.global_scale = std::ldexp(rng.uniform(1.0f, 2.0f), int(rng.integer(-10, 10)));
  return r;
}

// The contract, written from the header rather than shared with linear.cpp: FP32 products of x
// and the dequantised weight, lane l summing columns l, l+16, … in order, lanes summed 0..15.
float expanded_lane16_dot(const float* x, const float* w, int64_t K) {
  float lanes[16] = {};
  for (int64_t k = 0; k < K; ++k) lanes[k % 16] += x[k] * w[k];
  float sum = 0.0f;
  for (float v : lanes) sum += v;
  return sum + 0.0f;
}

std::vector<float> random_activations(test::Rng& rng, int64_t n, int64_t K) {
  std::vector<float> x = rng.normals(size_t(n * K), rng.uniform(0.1f, 10.0f));
  for (int64_t t = 0; t < n; ++t) fp8_roundtrip_blocks(x.data() + t * K, K, kActBlockSize);  // §12
  return x;
}

// The kernels to compare on this host; a kernel it cannot run is said, not silently passed.
std::vector<Fp4Kernel> kernels_here() {
  std::vector<Fp4Kernel> out;
  for (Fp4Kernel k : {Fp4Kernel::kAvx2, Fp4Kernel::kAvx512}) {
    if (fp4_kernel_runs_here(k)) out.push_back(k);
    else std::printf("[fp4] the %s kernel does not run on this host: not tested here\n", to_string(k));
  }
  return out;
}

class Fp4Linear : public ::testing::TestWithParam<WeightFormat> {
 protected:
  void SetUp() override {
    if (!fp4_fused_available())
      GTEST_SKIP() << "this host has no AVX2: linear_rows expands FP4 rows (every CPU test covers that)";
  }
};

TEST_P(Fp4Linear, EqualsExpandedRowsBitForBitAndTheDoubleDotWithinTheSumBound) {
  const WeightFormat f = GetParam();
  const int64_t block = f == WeightFormat::kMXFP4 ? kMXFP4BlockSize : kNVFP4BlockSize;
  test::Rng rng(test::seed_for_this_test());
  const std::vector<Fp4Kernel> kernels = kernels_here();
  for (int shape = 0; shape < 8 * int(kernels.size()); ++shape) {  // 8 shapes per kernel, in turn
    const Fp4Kernel kernel = kernels[size_t(shape) % kernels.size()];
    const int64_t rows = rng.integer(1, 40), K = block * rng.integer(1, 48), n = rng.integer(1, 9);
    const RandomFp4 q = random_fp4(rng, f, rows, K);
    const std::vector<float> x = random_activations(rng, n, K);
    const int64_t r0 = rng.integer(0, rows - 1), nr = rng.integer(1, rows - r0);
    const int64_t y_stride = nr + rng.integer(0, 3);
    std::vector<float> y(size_t(n * y_stride), NAN);
    fp4_rows_dot(q.w, r0, nr, x.data(), n, y.data(), y_stride, kernel);

    std::vector<float> wrow(static_cast<size_t>(K));
    for (int64_t i = 0; i < nr; ++i) {
      q.w.dequant_rows(r0 + i, 1, wrow.data());
      for (int64_t t = 0; t < n; ++t) {
        const float* xt = x.data() + t * K;
        const float got = y[size_t(t * y_stride + i)];
        const float want = expanded_lane16_dot(xt, wrow.data(), K);
        ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want))
            << to_string(kernel) << " " << to_string(f) << " rows " << rows << " K " << K << " row " << r0 + i
            << " token " << t << ": " << got << " vs " << want;
        // Independent of the lane order: a double dot, and the classic bound for FP32 sums of
        // K/16 + 16 terms deep (each product rounds once more), plus subnormal products' absolute error.
        double exact = 0.0, magnitude = 0.0;
        for (int64_t k = 0; k < K; ++k) {
          exact += double(xt[k]) * double(wrow[size_t(k)]);
          magnitude += std::fabs(double(xt[k]) * double(wrow[size_t(k)]));
        }
        const double depth = double(K / 16 + 16 + 1);
        const double bound = depth * 0x1p-24 * magnitude / (1.0 - depth * 0x1p-24) + double(K) * 0x1p-149;
        ASSERT_LE(std::fabs(double(got) - exact), bound) << to_string(f) << " K " << K;
      }
    }
    for (int64_t t = 0; t < n; ++t)  // the stride's gap is never written
      for (int64_t i = nr; i < y_stride; ++i) ASSERT_TRUE(std::isnan(y[size_t(t * y_stride + i)]));
  }
}

TEST_P(Fp4Linear, LinearRowsUsesItOnAThreadPoolWithFp8Activations) {
  const WeightFormat f = GetParam();
  const int64_t block = f == WeightFormat::kMXFP4 ? kMXFP4BlockSize : kNVFP4BlockSize;
  test::Rng rng(test::seed_for_this_test());
  const int64_t rows = rng.integer(40, 100), K = block * rng.integer(8, 32), n = rng.integer(1, 7);
  const RandomFp4 q = random_fp4(rng, f, rows, K);
  const std::vector<float> x = rng.normals(size_t(n * K), 3.0f);
  const int64_t row0 = rng.integer(0, 9), n_rows = rows - row0 - rng.integer(0, 9);
  ModelConfig cfg;
  ThreadPool pool(3);
  const CpuContext ctx{cfg, NumericsPoints::from(Numerics::kOfficial), pool};
  std::vector<float> y(size_t(n * n_rows));
  linear_rows(ctx, x.data(), n, q.w, row0, n_rows, y.data(), ActQuant::kFp8);

  std::vector<float> xq = x, wrow(static_cast<size_t>(K));
  for (int64_t t = 0; t < n; ++t) fp8_roundtrip_blocks(xq.data() + t * K, K, kActBlockSize);
  for (int64_t i = 0; i < n_rows; ++i) {
    q.w.dequant_rows(row0 + i, 1, wrow.data());
    for (int64_t t = 0; t < n; ++t) {
      const float want = expanded_lane16_dot(xq.data() + t * K, wrow.data(), K);
      ASSERT_EQ(std::bit_cast<uint32_t>(y[size_t(t * n_rows + i)]), std::bit_cast<uint32_t>(want))
          << to_string(f) << " row " << row0 + i << " token " << t;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, Fp4Linear, ::testing::Values(WeightFormat::kMXFP4, WeightFormat::kNVFP4),
                         [](const auto& info) { return std::string(to_string(info.param)); });

TEST(Fp4LinearErrors, NanMxfp4ScaleIsTheDequantisersError) {
  if (!fp4_fused_available()) GTEST_SKIP() << "this host has no AVX2";
  test::Rng rng(test::seed_for_this_test());
  // 40 blocks a row: both kernels read scales 16 blocks at a time, so the NaN may sit in any of a
  // row's three groups, the last one partial (AVX-512 masks it, AVX2 goes one scale at a time).
  constexpr int64_t kCols = 40 * kMXFP4BlockSize;
  RandomFp4 q = random_fp4(rng, WeightFormat::kMXFP4, 4, kCols);
  const size_t at = size_t(rng.integer(0, int64_t(q.scale.size()) - 1));
  q.scale[at] = kE8M0Nan;
  std::string want;
  std::vector<float> scratch(size_t(4 * kCols));
  try {
    q.w.dequant_rows(0, 4, scratch.data());
  } catch (const Error& e) {
    want = e.what();
  }
  ASSERT_FALSE(want.empty()) << "the scalar dequantiser accepted a NaN scale";
  const std::vector<float> x = random_activations(rng, 2, kCols);
  std::vector<float> y(8);
  for (Fp4Kernel kernel : kernels_here()) {
    try {
      fp4_rows_dot(q.w, 0, 4, x.data(), 2, y.data(), 4, kernel);
      ADD_FAILURE() << to_string(kernel) << ": a NaN scale was used";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), want) << to_string(kernel);
    }
  }
}

}  // namespace
}  // namespace dsv4
