// Shared test helpers (CPU backend, CLI end-to-end): a seeded RNG over seed.h's replayable base seed,
// and FP32 WeightMatrix views over test-owned buffers.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "model/quant.h"
#include "support/seed.h"

namespace dsv4::test {

struct Rng {
  std::mt19937_64 gen;
  explicit Rng(uint64_t salt) : gen(test_seed() ^ (salt * 0x9E3779B97F4A7C15ull)) {}
  float normal(float std = 1.0f) { return std::normal_distribution<float>(0.0f, std)(gen); }
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen); }
  int64_t integer(int64_t lo, int64_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<int64_t>(lo, hi)(gen);
  }
  std::vector<float> normals(size_t n, float std = 1.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = normal(std);
    return v;
  }
};

// FP32 view of a test-owned buffer [rows, cols].
inline WeightMatrix f32_matrix(const std::vector<float>& v, int64_t rows, int64_t cols,
                               const std::string& name = "test") {
  WeightMatrix w;
  w.name = name;
  w.format = WeightFormat::kF32;
  w.rows = rows;
  w.cols = cols;
  w.data = reinterpret_cast<const uint8_t*>(v.data());
  return w;
}

}  // namespace dsv4::test
