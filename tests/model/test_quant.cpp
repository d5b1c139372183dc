// Block formats (model/quant): hand-built byte vectors for FP8-block, MXFP4 and NVFP4 layouts,
// the 0xFF scale rejection, packers and the §12 round-trip quantisers against independent oracles.
#include <gtest/gtest.h>

#include <bit>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "model/quant.h"
#include "support/seed.h"
#include "util/error.h"
#include "util/float_formats.h"

namespace dsv4 {
namespace {

// Replayable: DSV4_TEST_SEED reproduces a run (support/seed.h prints it).
std::mt19937 seeded_rng(const char* test) { return std::mt19937(uint32_t(test::seed_for(test))); }

std::vector<float> random_weights(std::mt19937& rng, size_t n) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> mag(-6, 3);  // blocks with very different magnitudes
  std::vector<float> w(n);
  for (auto& x : w) x = std::ldexp(nd(rng), mag(rng));
  return w;
}

// Nearest value of a grid (ties to the even code), as an oracle independent of the encoders.
float nearest_on_grid(float x, bool e4m3) {
  float best = 0;
  double bd = INFINITY;
  const int n = e4m3 ? 127 : 8;
  for (int c = 0; c < n; ++c) {
    const float v = e4m3 ? e4m3_to_f32(uint8_t(c)) : e2m1_to_f32(uint8_t(c));
    const double d = std::fabs(double(std::fabs(x)) - v);
    if (d < bd || (d == bd && (c & 1) == 0)) { bd = d; best = v; }
  }
  return std::copysign(best, x);
}

TEST(Quant, FP8BlockLayoutHandVector) {
  // [2, 130]: two scale columns (ceil(130/128)); column 128 must use the second one.
  std::vector<uint8_t> q(2 * 130, 0x38);      // every element 1.0
  q[1 * 130 + 129] = 0xC4;                    // -3.0
  const uint8_t scale[2] = {129, 125};        // 4.0, 0.25
  WeightMatrix m;
  m.name = "t";
  m.format = WeightFormat::kFP8Block;
  m.rows = 2; m.cols = 130;
  m.data = q.data(); m.scale = scale;
  EXPECT_EQ(m.at(0, 0), 4.0f);
  EXPECT_EQ(m.at(1, 127), 4.0f);
  EXPECT_EQ(m.at(0, 128), 0.25f);
  EXPECT_EQ(m.at(1, 129), -0.75f);
  const float fscale[2] = {3.0f, -0.5f};     // F32 scales (Base exports, §11.2)
  m.scale = reinterpret_cast<const uint8_t*>(fscale);
  m.scale_is_f32 = true;
  EXPECT_EQ(m.at(0, 5), 3.0f);
  EXPECT_EQ(m.at(1, 129), 1.5f);
  EXPECT_EQ(scale_shape(WeightFormat::kFP8Block, 2, 130), (std::vector<int64_t>{1, 2}));
}

TEST(Quant, MXFP4LayoutHandVector) {
  // [1, 64]: byte 0 = 0x72 → col 0 low nibble 2 (1.0), col 1 high nibble 7 (6.0); §11.3.
  std::vector<uint8_t> q(32, 0x00);
  q[0] = 0x72;
  q[16] = 0xF9;  // col 32: nibble 9 (-0.5), col 33: nibble 15 (-6)
  const uint8_t scale[2] = {126, 130};  // 0.5, 8
  WeightMatrix m;
  m.name = "e";
  m.format = WeightFormat::kMXFP4;
  m.rows = 1; m.cols = 64;
  m.data = q.data(); m.scale = scale;
  std::vector<float> out(64);
  m.dequant_rows(0, 1, out.data());
  EXPECT_EQ(out[0], 0.5f);
  EXPECT_EQ(out[1], 3.0f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[32], -4.0f);
  EXPECT_EQ(out[33], -48.0f);
  EXPECT_EQ(scale_shape(WeightFormat::kMXFP4, 7, 64), (std::vector<int64_t>{7, 2}));
  EXPECT_EQ(packed_data_shape(WeightFormat::kMXFP4, 7, 64), (std::vector<int64_t>{7, 32}));
}

TEST(Quant, NVFP4UsesWeightScale2NeverInputScale) {
  std::vector<uint8_t> q(16, 0x00);
  q[0] = 0x05;   // col 0: 3.0
  q[8] = 0x0B;   // col 16: nibble 11 = -1.5
  const uint8_t scale[2] = {0x40, 0x30};  // E4M3 2.0, 0.5
  WeightMatrix m;
  m.name = "nv";
  m.format = WeightFormat::kNVFP4;
  m.rows = 1; m.cols = 32;
  m.data = q.data(); m.scale = scale;
  m.global_scale = 0.25f;
  m.input_scale = 1000.0f;  // must not touch weights (§11.6)
  EXPECT_EQ(m.at(0, 0), 3.0f * 2.0f * 0.25f);
  EXPECT_EQ(m.at(0, 16), -1.5f * 0.5f * 0.25f);
}

TEST(Quant, E8M0NanScaleIsRejected) {
  std::vector<uint8_t> q(16, 0x11);
  const uint8_t scale[1] = {kE8M0Nan};
  WeightMatrix m;
  m.name = "layers.0.ffn.experts.3.w1";
  m.format = WeightFormat::kMXFP4;
  m.rows = 1; m.cols = 32;
  m.data = q.data(); m.scale = scale;
  std::vector<float> out(32);
  try {
    m.dequant_rows(0, 1, out.data());
    FAIL() << "0xFF scale accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.ffn.experts.3.w1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("0xFF"), std::string::npos) << e.what();
  }
}

TEST(Quant, PackFP8BlockRoundTrip) {
  auto rng = seeded_rng("PackFP8BlockRoundTrip");
  const int64_t rows = 200, cols = 300;  // partial tiles on both axes
  const auto w = random_weights(rng, size_t(rows * cols));
  const PackedWeight p = pack_fp8_block(w.data(), rows, cols);
  ASSERT_EQ(int64_t(p.scale.size()), scale_numel(WeightFormat::kFP8Block, rows, cols));
  WeightMatrix m;
  m.name = "w"; m.format = WeightFormat::kFP8Block; m.rows = rows; m.cols = cols;
  m.data = p.data.data(); m.scale = p.scale.data();
  std::vector<float> out(size_t(rows * cols));
  m.dequant_rows(0, rows, out.data());
  // Oracle: tile scale 2^ceil(log2(amax/448)) in double, then the nearest E4M3 grid point.
  std::vector<double> tile_amax(size_t((rows + 127) / 128 * ((cols + 127) / 128)), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      double& a = tile_amax[size_t(r / 128 * ((cols + 127) / 128) + c / 128)];
      a = std::max(a, double(std::fabs(w[size_t(r * cols + c)])));
    }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double amax = tile_amax[size_t(r / 128 * ((cols + 127) / 128) + c / 128)];
      const double s = std::exp2(std::ceil(std::log2(amax / 448.0)));
      const float want = nearest_on_grid(float(w[size_t(r * cols + c)] / s), true) * float(s);
      ASSERT_EQ(out[size_t(r * cols + c)], want) << r << "," << c;
    }
}

TEST(Quant, PackMXFP4RoundTrip) {
  auto rng = seeded_rng("PackMXFP4RoundTrip");
  const int64_t rows = 37, cols = 96;
  const auto w = random_weights(rng, size_t(rows * cols));
  const PackedWeight p = pack_mxfp4(w.data(), rows, cols);
  WeightMatrix m;
  m.name = "w"; m.format = WeightFormat::kMXFP4; m.rows = rows; m.cols = cols;
  m.data = p.data.data(); m.scale = p.scale.data();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < cols / 32; ++b) {
      double amax = 0;
      for (int64_t i = 0; i < 32; ++i) amax = std::max(amax, double(std::fabs(w[size_t(r * cols + b * 32 + i)])));
      const double s = std::exp2(std::ceil(std::log2(amax / 6.0)));
      for (int64_t i = 0; i < 32; ++i) {
        const int64_t c = b * 32 + i;
        ASSERT_EQ(m.at(r, c), nearest_on_grid(float(w[size_t(r * cols + c)] / s), false) * float(s)) << r << "," << c;
      }
    }
}

TEST(Quant, PackNVFP4RoundTripBound) {
  auto rng = seeded_rng("PackNVFP4RoundTripBound");
  const int64_t rows = 9, cols = 64;
  const auto w = random_weights(rng, size_t(rows * cols));
  float amax = 0;
  for (float x : w) amax = std::max(amax, std::fabs(x));
  const float global = amax / (kE2M1Max * kE4M3Max);  // ModelOpt convention (§11.6)
  const PackedWeight p = pack_nvfp4(w.data(), rows, cols, global);
  WeightMatrix m;
  m.name = "w"; m.format = WeightFormat::kNVFP4; m.rows = rows; m.cols = cols;
  m.data = p.data.data(); m.scale = p.scale.data(); m.global_scale = global;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < cols / 16; ++b) {
      const float sb = e4m3_to_f32(p.scale[size_t(r * (cols / 16) + b)]);
      // The block scale is the E4M3 value nearest amax/6/global (ModelOpt convention).
      float bmax = 0;
      for (int64_t i = 0; i < 16; ++i) bmax = std::max(bmax, std::fabs(w[size_t(r * cols + b * 16 + i)]));
      ASSERT_EQ(sb, nearest_on_grid(bmax / kE2M1Max / global, true));
      for (int64_t i = 0; i < 16; ++i) {
        const int64_t c = b * 16 + i;
        // The element is the nearest E2M1 point of w/(sb·global) (clamped at 6), then
        // dequantised in the §11.6 order e2m1 · weight_scale · weight_scale_2.
        const float want = nearest_on_grid(w[size_t(r * cols + c)] / (sb * global), false) * sb * global;
        ASSERT_EQ(m.at(r, c), want) << r << "," << c;
      }
    }
}

TEST(Quant, Fp8RoundtripBlocksMatchesOracle) {
  auto rng = seeded_rng("Fp8RoundtripBlocksMatchesOracle");
  for (int64_t block : {kActBlockSize, kKvQuantBlock}) {
    const int64_t n = 3 * block + 17;  // a partial last block
    auto x = random_weights(rng, size_t(n));
    const auto x0 = x;
    fp8_roundtrip_blocks(x.data(), n, block);
    for (int64_t b0 = 0; b0 < n; b0 += block) {
      double amax = 0;
      for (int64_t i = b0; i < std::min(n, b0 + block); ++i) amax = std::max(amax, double(std::fabs(x0[size_t(i)])));
      const double s = std::exp2(std::ceil(std::log2(std::max(amax, 1e-4) / 448.0)));
      for (int64_t i = b0; i < std::min(n, b0 + block); ++i)
        ASSERT_EQ(x[size_t(i)], nearest_on_grid(float(x0[size_t(i)] / s), true) * float(s)) << i;
    }
  }
  std::vector<float> zeros(64, 0.0f);  // amax floor: no division by zero, zeros stay zeros
  fp8_roundtrip_blocks(zeros.data(), 64, 64);
  for (float z : zeros) EXPECT_EQ(z, 0.0f);
}

// The CUDA host tier hands the CPU expert the GPU's already quantised activations and does not
// quantise them again (cuda/host_experts.cpp): that is exact only because a second pass returns
// the first's values. Blocks across many magnitudes, below the amax floor, and with the largest
// value rounding up to the grid's 448 (the new amax sets the same or a halved scale).
TEST(Quant, Fp8RoundtripBlocksIsIdempotent) {
  auto rng = seeded_rng("Fp8RoundtripBlocksIsIdempotent");
  std::uniform_real_distribution<double> log_scale(-30.0, 12.0);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t n = kActBlockSize * 4;
    std::vector<float> x = random_weights(rng, size_t(n));
    const float magnitude = float(std::exp2(log_scale(rng)));
    for (float& v : x) v *= magnitude;
    if (trial % 4 == 0) x[size_t(trial % n)] = 447.9f * magnitude;  // rounds up to the grid's top
    fp8_roundtrip_blocks(x.data(), n, kActBlockSize);
    std::vector<float> again = x;
    fp8_roundtrip_blocks(again.data(), n, kActBlockSize);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(again[size_t(i)]), std::bit_cast<uint32_t>(x[size_t(i)]))
          << "trial " << trial << " index " << i << " magnitude " << magnitude;
  }
}

TEST(Quant, Fp4RoundtripBlocksMatchesOracle) {
  auto rng = seeded_rng("Fp4RoundtripBlocksMatchesOracle");
  const int64_t n = 4 * kIndexerQuantBlock;
  auto x = random_weights(rng, size_t(n));
  const auto x0 = x;
  fp4_roundtrip_blocks(x.data(), n, kIndexerQuantBlock);
  for (int64_t b0 = 0; b0 < n; b0 += kIndexerQuantBlock) {
    double amax = 0;
    for (int64_t i = b0; i < b0 + kIndexerQuantBlock; ++i) amax = std::max(amax, double(std::fabs(x0[size_t(i)])));
    const double s = std::exp2(std::ceil(std::log2(std::max(amax, 6.0 * std::ldexp(1.0, -126)) / 6.0)));
    for (int64_t i = b0; i < b0 + kIndexerQuantBlock; ++i)
      ASSERT_EQ(x[size_t(i)], nearest_on_grid(float(x0[size_t(i)] / s), false) * float(s)) << i;
  }
}

}  // namespace
}  // namespace dsv4
