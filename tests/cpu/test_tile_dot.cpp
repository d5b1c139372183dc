// tile_rows_dot (cpu/tile_dot.h), both builds this host runs, on fresh random tiles and activations
// of every shape class (K below, at and between multiples of 16; odd row and token counts, so the
// AVX2 build's one-row and one-token passes run; strided output): bit-identical to the contract
// as its header words it, and within the FP32 summation bound of a double-precision dot.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <vector>

#include "cpu/tile_dot.h"
#include "support/test_util.h"

namespace dsv4 {
namespace {

// The header's contract, written from its words: 16 lanes over the whole 16s, lanes added in
// order onto +0, then the serial sum of the remaining columns.
float contract_dot(const float* x, const float* w, int64_t K) {
  float lanes[16] = {};
  const int64_t whole = K / 16 * 16;
  for (int64_t k = 0; k < whole; ++k) lanes[k % 16] += x[k] * w[k];
  float tail = 0.0f;
  for (int64_t k = whole; k < K; ++k) tail += x[k] * w[k];
  float sum = 0.0f;
  for (float v : lanes) sum += v;
  return sum + tail;
}

TEST(TileDot, BothBuildsEqualTheContractBitForBitAndTheDoubleDotWithinTheSumBound) {
  test::Rng rng(test::seed_for_this_test());
  std::vector<bool> builds = {false};
  if (tile_dot_avx2_here()) builds.push_back(true);
  else std::printf("[tile_dot] this host has no AVX2: only the plain build is tested here\n");
  for (int shape = 0; shape < 40; ++shape) {
    const int64_t nr = rng.integer(1, 7), n = rng.integer(1, 7);
    const int64_t K = shape % 4 == 0 ? rng.integer(1, 15) : shape % 4 == 1 ? 16 * rng.integer(1, 40) : rng.integer(17, 700);
    std::vector<float> tile = rng.normals(size_t(nr * K), rng.uniform(0.01f, 4.0f));
    std::vector<float> x = rng.normals(size_t(n * K), rng.uniform(0.01f, 10.0f));
    for (int z = 0; z < 4; ++z) tile[size_t(rng.integer(0, nr * K - 1))] = -0.0f;  // signed zeros in the sums
    const int64_t y_stride = nr + rng.integer(0, 3);
    for (const bool avx2 : builds) {
      std::vector<float> y(size_t(n * y_stride), NAN);
      tile_rows_dot(tile.data(), nr, x.data(), n, K, y.data(), y_stride, avx2);
      for (int64_t t = 0; t < n; ++t) {
        const float* xt = x.data() + t * K;
        for (int64_t i = 0; i < nr; ++i) {
          const float* wi = tile.data() + i * K;
          const float got = y[size_t(t * y_stride + i)];
          const float want = contract_dot(xt, wi, K);
          ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want))
              << (avx2 ? "avx2" : "plain") << " K " << K << " row " << i << " token " << t << ": " << got << " vs "
              << want;
          // Independent of the order: a double dot and the FP32 bound for sums K/16 + 16 + tail
          // deep (each product rounds once more).
          double exact = 0.0, magnitude = 0.0;
          for (int64_t k = 0; k < K; ++k) {
            exact += double(xt[k]) * double(wi[k]);
            magnitude += std::fabs(double(xt[k]) * double(wi[k]));
          }
          const double depth = double(K / 16 + 16 + K % 16 + 2);
          const double bound = depth * 0x1p-24 * magnitude / (1.0 - depth * 0x1p-24) + double(K) * 0x1p-149;
          ASSERT_LE(std::fabs(double(got) - exact), bound) << "K " << K;
        }
        for (int64_t i = nr; i < y_stride; ++i) ASSERT_TRUE(std::isnan(y[size_t(t * y_stride + i)]));  // gap unwritten
      }
    }
  }
}

}  // namespace
}  // namespace dsv4
