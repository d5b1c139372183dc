// tile_rows_dot's two builds (cpu/tile_dot.h). Compiled with -ffp-contract=off (CMakeLists.txt):
// a multiply and the add after it are two roundings, never one fused multiply-add.
#include "cpu/tile_dot.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace dsv4 {

namespace {

constexpr int kLanes = 16;

inline float tail_sum(const float* a, const float* b, int64_t k0, int64_t K) {
  float tail = 0.0f;
  for (int64_t k = k0; k < K; ++k) tail += a[k] * b[k];
  return tail;
}

float dot(const float* a, const float* b, int64_t K) {
  float acc[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += a[k + l] * b[k + l];
  return lane_sum(acc, tail_sum(a, b, k, K));
}

#if defined(__x86_64__)

#define DSV4_AVX2 __attribute__((target("avx2")))

// kRows weight rows × kTokens activation rows, each pair's 16 lanes in two registers (lanes 0–7,
// 8–15): at most 2 × 2 pairs = 8 accumulators, with 2 + 2 loaded vectors per row and token.
template <int kRows, int kTokens>
DSV4_AVX2 void avx2_pass(const float* w, const float* x, int64_t K, float* y, int64_t y_stride) {
  __m256 lo[kRows][kTokens], hi[kRows][kTokens];
  for (int j = 0; j < kRows; ++j)
    for (int t = 0; t < kTokens; ++t) lo[j][t] = hi[j][t] = _mm256_setzero_ps();
  const int64_t k_end = K / kLanes * kLanes;
  for (int64_t k = 0; k < k_end; k += kLanes) {
    __m256 w_lo[kRows], w_hi[kRows];
    for (int j = 0; j < kRows; ++j) {
      w_lo[j] = _mm256_loadu_ps(w + j * K + k);
      w_hi[j] = _mm256_loadu_ps(w + j * K + k + 8);
    }
    for (int t = 0; t < kTokens; ++t) {
      const __m256 x_lo = _mm256_loadu_ps(x + t * K + k), x_hi = _mm256_loadu_ps(x + t * K + k + 8);
      for (int j = 0; j < kRows; ++j) {
        lo[j][t] = _mm256_add_ps(lo[j][t], _mm256_mul_ps(x_lo, w_lo[j]));
        hi[j][t] = _mm256_add_ps(hi[j][t], _mm256_mul_ps(x_hi, w_hi[j]));
      }
    }
  }
  for (int j = 0; j < kRows; ++j)
    for (int t = 0; t < kTokens; ++t) {
      alignas(32) float lanes[kLanes];
      _mm256_store_ps(lanes, lo[j][t]);
      _mm256_store_ps(lanes + 8, hi[j][t]);
      y[t * y_stride + j] = lane_sum(lanes, tail_sum(x + t * K, w + j * K, k_end, K));
    }
}

DSV4_AVX2 void avx2_rows_dot(const float* tile, int64_t nr, const float* x, int64_t n, int64_t K, float* y,
                             int64_t y_stride) {
  for (int64_t t = 0; t < n; t += 2) {
    const bool two_tokens = n - t >= 2;
    for (int64_t i = 0; i < nr; i += 2) {
      const float* w = tile + i * K;
      const float* xt = x + t * K;
      float* yt = y + t * y_stride + i;
      if (nr - i >= 2) {
        if (two_tokens) avx2_pass<2, 2>(w, xt, K, yt, y_stride);
        else avx2_pass<2, 1>(w, xt, K, yt, y_stride);
      } else {
        if (two_tokens) avx2_pass<1, 2>(w, xt, K, yt, y_stride);
        else avx2_pass<1, 1>(w, xt, K, yt, y_stride);
      }
    }
  }
}

#endif

}  // namespace

bool tile_dot_avx2_here() {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
#else
  return false;
#endif
}

void tile_rows_dot(const float* tile, int64_t nr, const float* x, int64_t n, int64_t K, float* y, int64_t y_stride,
                   bool avx2) {
#if defined(__x86_64__)
  if (avx2 && tile_dot_avx2_here()) {
    avx2_rows_dot(tile, nr, x, n, K, y, y_stride);
    return;
  }
#endif
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < nr; ++i) y[t * y_stride + i] = dot(x + t * K, tile + i * K, K);
}

}  // namespace dsv4
