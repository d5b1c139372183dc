// The CUDA op-parity harness: a gtest fixture that skips without a GPU and seeds a fresh RNG per
// case (printed; DSV4_TEST_SEED reproduces one), and comparators that report max-abs, max-rel,
// cosine, the worst element and the share of its error budget. Each test file owns its op's
// scalar reference and derives its budget; this file owns only the bookkeeping.
#pragma once

#include <gtest/gtest.h>

#include <cuda_bf16.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"

namespace dsv4::cuda::test {

constexpr double kF32Unit = 1.0 / (1 << 24);  // u = 2^-24, unit roundoff of FP32
constexpr double kBf16HalfUlp = 1.0 / (1 << 8);  // |bf16(v) − v| ≤ 2^-8·|v| (8 significand bits)

class CudaOpTest : public ::testing::Test {
 protected:
  void SetUp() override;
  std::mt19937_64 rng;
  uint64_t seed = 0;

  float normal(float sigma = 1.0f) { return std::normal_distribution<float>(0.0f, sigma)(rng); }
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng); }
  int uniform_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
  std::vector<float> normals(size_t n, float sigma = 1.0f);
  // Random E4M3 bytes over the whole finite grid (subnormals and ±448 included, never NaN).
  std::vector<uint8_t> random_e4m3(size_t n);
  // Random UE8M0 bytes in [127 − spread, 127 + spread].
  std::vector<uint8_t> random_e8m0(size_t n, int spread);
};

struct ParityReport {
  double max_abs = 0, max_rel = 0, cosine = 1, worst_share = 0;
  int64_t worst_idx = -1, n_bad = 0, n_nonfinite_mismatch = 0;
};

// Compare got (kernel) to ref (double reference) element by element against budget[i]
// (an absolute bound derived per element by the caller). Prints one report line; adds a gtest
// failure when any element exceeds its budget or when got is non-finite where ref is finite
// (an unwritten, poisoned element) or vice versa.
ParityReport expect_parity(const std::string& what, const std::vector<float>& got,
                           const std::vector<double>& ref, const std::vector<double>& budget);

// Bitwise equality for layout / quantisation bytes.
void expect_bytes_equal(const std::string& what, const std::vector<uint8_t>& got,
                        const std::vector<uint8_t>& ref);

// BF16 host <-> float helpers (bit patterns; the scalar conversions are util/float_formats.h).
std::vector<uint16_t> to_bf16(const std::vector<float>& v);
std::vector<float> from_bf16(const std::vector<uint16_t>& v);
inline __nv_bfloat16* bf16_ptr(DeviceBuffer<uint16_t>& b) { return reinterpret_cast<__nv_bfloat16*>(b.get()); }

constexpr int kPoisonByte = 0xFF;  // NaN in fp32, bf16, e4m3 and e8m0; −1 in int32

}  // namespace dsv4::cuda::test
