// Shared test helpers (CPU backend, CLI end-to-end): a seeded RNG (seed printed, fresh each run unless
// DSV4_TEST_SEED is set), FP32 WeightMatrix views over test-owned buffers, and error reports.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "model/quant.h"

namespace dsv4::test {

inline uint64_t test_seed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("DSV4_TEST_SEED");
    const uint64_t s = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    std::fprintf(stderr, "[cpu tests] seed %llu (set DSV4_TEST_SEED to repeat)\n",
                 (unsigned long long)s);
    return s;
  }();
  return seed;
}

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
