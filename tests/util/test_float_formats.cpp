// Element formats (util/float_formats): hand-computed vectors with edge values, exhaustive
// round trips, and random values against a brute-force nearest-grid-point oracle.
// Block formats are tested in tests/model/test_quant.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "support/seed.h"
#include "util/float_formats.h"

namespace dsv4 {
namespace {

// Replayable: DSV4_TEST_SEED reproduces a run (support/seed.h prints it).
std::mt19937 seeded_rng(const char* test) { return std::mt19937(uint32_t(test::seed_for(test))); }

// Oracle: nearest finite value among all codes of a grid (values[i] for code i), ties to the even
// code, saturating beyond the largest magnitude. Independent of the bit-twiddling encoder.
uint8_t nearest_code(float x, const std::vector<float>& pos_values, uint8_t sign_bit) {
  const float a = std::fabs(x);
  int best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (int c = 0; c < int(pos_values.size()); ++c) {
    if (std::isnan(pos_values[size_t(c)])) continue;
    const double d = std::fabs(double(a) - double(pos_values[size_t(c)]));
    if (d < best_d || (d == best_d && (c & 1) == 0)) { best = c; best_d = d; }
  }
  return uint8_t(best | (std::signbit(x) ? sign_bit : 0));
}

TEST(FloatFormats, E4M3DecodeHandVectors) {
  EXPECT_EQ(e4m3_to_f32(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(e4m3_to_f32(0x80)) && e4m3_to_f32(0x80) == 0.0f);  // -0
  EXPECT_EQ(e4m3_to_f32(0x01), std::ldexp(1.0f, -9));                         // smallest subnormal
  EXPECT_EQ(e4m3_to_f32(0x07), 7.0f * std::ldexp(1.0f, -9));                  // largest subnormal
  EXPECT_EQ(e4m3_to_f32(0x08), std::ldexp(1.0f, -6));                         // smallest normal
  EXPECT_EQ(e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_f32(0x3C), 1.5f);
  EXPECT_EQ(e4m3_to_f32(0x77), 240.0f);
  EXPECT_EQ(e4m3_to_f32(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0xFE), -448.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0xFF)));
}

TEST(FloatFormats, E4M3EncodeHandVectors) {
  EXPECT_EQ(f32_to_e4m3(0.0f), 0x00);
  EXPECT_EQ(f32_to_e4m3(-0.0f), 0x80);
  EXPECT_EQ(f32_to_e4m3(448.0f), 0x7E);
  EXPECT_EQ(f32_to_e4m3(-448.0f), 0xFE);
  EXPECT_EQ(f32_to_e4m3(464.0f), 0x7E);   // would round up past 448: saturates
  EXPECT_EQ(f32_to_e4m3(1e30f), 0x7E);
  EXPECT_EQ(f32_to_e4m3(INFINITY), 0x7E);
  EXPECT_EQ(f32_to_e4m3(-INFINITY), 0xFE);
  EXPECT_EQ(f32_to_e4m3(NAN) & 0x7F, 0x7F);
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.0f, -9)), 0x01);
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.0f, -10)), 0x00);        // tie 0 / 2^-9 → even (0)
  EXPECT_EQ(f32_to_e4m3(3.0f * std::ldexp(1.0f, -10)), 0x02);  // tie 1 / 2 (×2^-9) → even (2)
  EXPECT_EQ(f32_to_e4m3(15.5f * std::ldexp(1.0f, -10)), 0x08); // rounds up into the normal range
  EXPECT_EQ(f32_to_e4m3(1.0625f), 0x38);  // tie 1.0 / 1.125 → even mantissa (1.0)
  EXPECT_EQ(f32_to_e4m3(1.1875f), 0x3A);  // tie 1.125 / 1.25 → even mantissa (1.25)
  EXPECT_EQ(f32_to_e4m3(1.96875f), 0x40); // tie 1.875 / 2.0 → 2.0 (carries into the exponent)
  EXPECT_EQ(f32_to_e4m3(-3.0f), 0xC4);
}

TEST(FloatFormats, E4M3ExhaustiveRoundTrip) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7F) == 0x7F) continue;  // NaN codes
    EXPECT_EQ(f32_to_e4m3(e4m3_to_f32(uint8_t(b))), b) << "code " << b;
  }
}

TEST(FloatFormats, E4M3RandomAgainstNearestOracle) {
  auto rng = seeded_rng("E4M3RandomAgainstNearestOracle");
  std::vector<float> grid(128);
  for (int c = 0; c < 128; ++c) grid[size_t(c)] = e4m3_to_f32(uint8_t(c));
  std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
  std::uniform_int_distribution<int> expo(-14, 10);  // subnormals through saturation
  for (int i = 0; i < 20000; ++i) {
    const float x = std::ldexp(mant(rng), expo(rng));
    ASSERT_EQ(f32_to_e4m3(x), nearest_code(x, grid, 0x80)) << "x = " << x;
  }
}

TEST(FloatFormats, E2M1HandVectorsAndOracle) {
  const float mags[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (int c = 0; c < 8; ++c) {
    EXPECT_EQ(e2m1_to_f32(uint8_t(c)), mags[c]);
    EXPECT_EQ(e2m1_to_f32(uint8_t(c | 8)), -mags[c]);
    EXPECT_EQ(f32_to_e2m1(mags[c]), c);
  }
  EXPECT_TRUE(std::signbit(e2m1_to_f32(8)));  // -0
  // Midpoints: ties go to the even code.
  EXPECT_EQ(f32_to_e2m1(0.25f), 0);
  EXPECT_EQ(f32_to_e2m1(0.75f), 2);
  EXPECT_EQ(f32_to_e2m1(1.25f), 2);
  EXPECT_EQ(f32_to_e2m1(1.75f), 4);
  EXPECT_EQ(f32_to_e2m1(2.5f), 4);
  EXPECT_EQ(f32_to_e2m1(3.5f), 6);
  EXPECT_EQ(f32_to_e2m1(5.0f), 6);
  EXPECT_EQ(f32_to_e2m1(6.0f), 7);
  EXPECT_EQ(f32_to_e2m1(100.0f), 7);   // saturates
  EXPECT_EQ(f32_to_e2m1(-100.0f), 15);
  EXPECT_EQ(f32_to_e2m1(-0.1f), 8);    // -0

  auto rng = seeded_rng("E2M1HandVectorsAndOracle");
  std::vector<float> grid(mags, mags + 8);
  std::uniform_real_distribution<float> u(-8.0f, 8.0f);
  for (int i = 0; i < 20000; ++i) {
    const float x = u(rng);
    ASSERT_EQ(f32_to_e2m1(x), nearest_code(x, grid, 0x8)) << "x = " << x;
  }
}

TEST(FloatFormats, UE8M0) {
  EXPECT_EQ(e8m0_to_f32(127), 1.0f);
  EXPECT_EQ(e8m0_to_f32(0), std::ldexp(1.0f, -127));
  EXPECT_EQ(e8m0_to_f32(254), std::ldexp(1.0f, 127));
  EXPECT_TRUE(std::isnan(e8m0_to_f32(kE8M0Nan)));
  // 2^ceil(log2(max(amax, floor)/max)): exact powers stay, anything above rounds up.
  EXPECT_EQ(ue8m0_scale_for(448.0f, kE4M3Max, 1e-4f), 127);
  EXPECT_EQ(ue8m0_scale_for(448.0001f, kE4M3Max, 1e-4f), 128);
  EXPECT_EQ(ue8m0_scale_for(224.0f, kE4M3Max, 1e-4f), 126);
  EXPECT_EQ(ue8m0_scale_for(6.0f, kE2M1Max, 0.0f), 127);
  EXPECT_EQ(ue8m0_scale_for(7.0f, kE2M1Max, 0.0f), 128);
  // amax = 0 → floor 1e-4/448 = 2.23e-7 → 2^-22 (2^-23 = 1.19e-7 would be too small).
  EXPECT_EQ(ue8m0_scale_for(0.0f, kE4M3Max, 1e-4f), 127 - 22);
  EXPECT_EQ(ue8m0_scale_for(NAN, kE4M3Max, 1e-4f), kE8M0Nan);
  EXPECT_EQ(ue8m0_scale_for(INFINITY, kE4M3Max, 1e-4f), 254);

  auto rng = seeded_rng("UE8M0");
  std::uniform_real_distribution<float> mant(0.5f, 1.0f);
  std::uniform_int_distribution<int> expo(-60, 60);
  for (int i = 0; i < 20000; ++i) {
    const float amax = std::ldexp(mant(rng), expo(rng));
    const double s = e8m0_to_f32(ue8m0_scale_for(amax, kE4M3Max, 1e-30f));
    ASSERT_LE(double(amax) / s, double(kE4M3Max)) << amax;          // never overflows E4M3
    ASSERT_GT(double(amax) / (s / 2), double(kE4M3Max)) << amax;    // and is the smallest such
  }
}

TEST(FloatFormats, BF16AndF16) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);       // tie → even
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);   // tie → even (up)
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_f32(0x7F80), INFINITY);
  EXPECT_EQ(f16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_to_f32(0xFC00), -INFINITY);
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7E00)));
}

}  // namespace
}  // namespace dsv4
