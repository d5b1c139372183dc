// The fused FP8 GEMV (cpu/fp8_linear.h) on fresh random E4M3 bytes (every non-NaN byte, subnormals
// included) with UE8M0 scales (the subnormal byte 0 included) and FP32 scales (subnormal ones
// included), partial 128-blocks in both dimensions, 1–9 activation rows: bit-identical to
// expanding the rows with the scalar dequantiser and taking the plain tile dot, which is its
// contract; through linear_rows on a thread pool; NaN bytes and a scale whose 256-fold overflows
// take the dequantiser's values; a NaN UE8M0 scale is the dequantiser's error.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/context.h"
#include "cpu/fp8_linear.h"
#include "cpu/linear.h"
#include "cpu/tile_dot.h"
#include "util/error.h"
#include "support/test_util.h"

namespace dsv4 {
namespace {

struct RandomFp8 {
  std::vector<uint8_t> data, scale;
  WeightMatrix w;
};

RandomFp8 random_fp8(test::Rng& rng, int64_t rows, int64_t cols, bool f32_scales) {
  RandomFp8 r;
  r.data.resize(size_t(rows * cols));
  for (uint8_t& b : r.data) {
    do b = uint8_t(rng.integer(0, 255));
    while ((b & 0x7F) == 0x7F);
  }
  const int64_t n_scales = ((rows + 127) / 128) * ((cols + 127) / 128);
  if (f32_scales) {
    r.scale.resize(size_t(n_scales * 4));
    for (int64_t i = 0; i < n_scales; ++i) {
      // Mostly normal scales over a wide range, 1 in 8 subnormal.
      const float s = rng.integer(0, 7) == 0 ? std::ldexp(rng.uniform(1.0f, 2.0f), -140)
                                             : std::ldexp(rng.uniform(-2.0f, 2.0f), int(rng.integer(-30, 10)));
      std::memcpy(r.scale.data() + 4 * i, &s, 4);
    }
  } else {
    r.scale.resize(size_t(n_scales));
    for (uint8_t& b : r.scale) b = rng.integer(0, 15) == 0 ? 0 : uint8_t(rng.integer(127 - 30, 127 + 10));
  }
  r.w.name = "layers.0.attn.wq_a.weight";
  r.w.format = WeightFormat::kFP8Block;
  r.w.rows = rows;
  r.w.cols = cols;
  r.w.data = r.data.data();
  r.w.scale = r.scale.data();
  r.w.scale_is_f32 = f32_scales;
  return r;
}

// The expanded path: the scalar dequantiser, then the plain build of the tile dot.
std::vector<float> expanded(const WeightMatrix& w, int64_t r0, int64_t nr, const std::vector<float>& x, int64_t n) {
  std::vector<float> tile(size_t(nr * w.cols)), y(size_t(n * nr));
  w.dequant_rows(r0, nr, tile.data());
  tile_rows_dot(tile.data(), nr, x.data(), n, w.cols, y.data(), nr, /*avx2=*/false);
  return y;
}

class Fp8Linear : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fp8_fused_available()) GTEST_SKIP() << "this host has no AVX2 + F16C: linear_rows expands FP8 rows";
  }
};

TEST_F(Fp8Linear, EqualsExpandedRowsBitForBit) {
  test::Rng rng(test::seed_for_this_test());
  for (int shape = 0; shape < 16; ++shape) {
    const int64_t rows = rng.integer(1, 300), K = 16 * rng.integer(1, 40), n = rng.integer(1, 9);
    const RandomFp8 q = random_fp8(rng, rows, K, shape % 2 == 1);
    const std::vector<float> x = rng.normals(size_t(n * K), rng.uniform(0.1f, 10.0f));
    const int64_t r0 = rng.integer(0, rows - 1), nr = rng.integer(1, rows - r0);
    const int64_t y_stride = nr + rng.integer(0, 3);
    std::vector<float> y(size_t(n * y_stride), NAN);
    fp8_rows_dot(q.w, r0, nr, x.data(), n, y.data(), y_stride);
    const std::vector<float> want = expanded(q.w, r0, nr, x, n);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < nr; ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(y[size_t(t * y_stride + i)]), std::bit_cast<uint32_t>(want[size_t(t * nr + i)]))
            << (q.w.scale_is_f32 ? "f32" : "ue8m0") << " scales, rows " << rows << " K " << K << " row " << r0 + i
            << " token " << t;
      for (int64_t i = nr; i < y_stride; ++i) ASSERT_TRUE(std::isnan(y[size_t(t * y_stride + i)]));  // gap unwritten
    }
  }
}

TEST_F(Fp8Linear, LinearRowsUsesItOnAThreadPool) {
  test::Rng rng(test::seed_for_this_test());
  ThreadPool pool(3);
  ModelConfig cfg;
  const CpuContext ctx{cfg, NumericsPoints::from(Numerics::kOfficialBf16), pool};
  const int64_t rows = 200, K = 384, n = 5;
  const RandomFp8 q = random_fp8(rng, rows, K, false);
  const std::vector<float> x = rng.normals(size_t(n * K));
  std::vector<float> y(size_t(n * rows));
  linear(ctx, x.data(), n, q.w, y.data());
  const std::vector<float> want = expanded(q.w, 0, rows, x, n);
  for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(want[i])) << i;
}

// The two cases the register shortcut cannot take go through the dequantiser: a NaN byte (its row's
// sums are NaN, as expanded), and a scale whose 256-fold overflows while the products do not.
TEST_F(Fp8Linear, NanBytesAndHugeScalesTakeTheDequantisersValues) {
  test::Rng rng(test::seed_for_this_test());
  const int64_t rows = 4, K = 256, n = 3;
  const std::vector<float> x = rng.normals(size_t(n * K), 1e-3f);
  std::vector<float> y(size_t(n * rows));
  {
    RandomFp8 q = random_fp8(rng, rows, K, rng.integer(0, 1) == 1);
    q.data[size_t(1 * K + rng.integer(0, K - 1))] = rng.integer(0, 1) ? 0x7F : 0xFF;  // row 1
    fp8_rows_dot(q.w, 0, rows, x.data(), n, y.data(), rows);
    const std::vector<float> want = expanded(q.w, 0, rows, x, n);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < rows; ++i) {
        const float got = y[size_t(t * rows + i)], w = want[size_t(t * rows + i)];
        if (i == 1) ASSERT_TRUE(std::isnan(got) && std::isnan(w)) << "token " << t << ": " << got << " vs " << w;
        else ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(w)) << "row " << i << " token " << t;
      }
  }
  {
    RandomFp8 q = random_fp8(rng, rows, K, true);
    const float huge = std::ldexp(1.0f, 125);
    std::memcpy(q.scale.data() + 4, &huge, 4);  // column block 1 of rows 0–127
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t k = 128; k < K; ++k) q.data[size_t(i * K + k)] = uint8_t(rng.integer(0, 0x3F));  // |v| < 1
    fp8_rows_dot(q.w, 0, rows, x.data(), n, y.data(), rows);
    const std::vector<float> want = expanded(q.w, 0, rows, x, n);
    for (size_t i = 0; i < y.size(); ++i) {
      ASSERT_TRUE(std::isfinite(want[i])) << "the case meant finite products";
      ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(want[i])) << i << ": " << y[i] << " vs " << want[i];
    }
  }
}

TEST_F(Fp8Linear, NanUe8m0ScaleIsTheDequantisersError) {
  test::Rng rng(test::seed_for_this_test());
  RandomFp8 q = random_fp8(rng, 130, 256, false);
  q.scale[size_t(rng.integer(0, int64_t(q.scale.size()) - 1))] = kE8M0Nan;
  std::string want;
  std::vector<float> scratch(size_t(130 * 256));
  try {
    q.w.dequant_rows(0, 130, scratch.data());
  } catch (const Error& e) {
    want = e.what();
  }
  ASSERT_FALSE(want.empty()) << "the scalar dequantiser accepted a NaN scale";
  const std::vector<float> x = rng.normals(size_t(2 * 256));
  std::vector<float> y(size_t(2 * 130));
  try {
    fp8_rows_dot(q.w, 0, 130, x.data(), 2, y.data(), 130);
    ADD_FAILURE() << "a NaN scale was used";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), want);
  }
}

}  // namespace
}  // namespace dsv4
