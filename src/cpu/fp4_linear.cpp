// fp4_rows_dot: for each pass of up to 4 activation rows and each weight row, walk the row 16
// columns at a time: two AVX2 decodes of 8 columns (lanes 0–7 and 8–15 of linear.cpp's dot), a
// multiply by the block scale, then a multiply and an add into each row's two accumulators. The
// token passes are the outer loop so that a tile of weight rows is read from L1/L2 once per pass.
// Target attributes rather than a global -mavx2: the binary still runs on any x86-64 host, and
// the build never enables FMA for this file, which would change the roundings (see the header).
#include "cpu/fp4_linear.h"

#include <algorithm>
#include <cstring>

#include "util/error.h"
#include "util/float_formats.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace dsv4 {

#if defined(__x86_64__)

namespace {

#define DSV4_AVX2 __attribute__((target("avx2")))

// Activation rows that share one decode of the weights: 2 accumulators each, 8 of 16 registers.
constexpr int kTokensPerPass = 4;

// Columns c..c+7 of a row as E2M1 values, unscaled. `packed` holds their 4 bytes, low nibble =
// even column (§11.3), so column c+j's nibble is bits 4j..4j+3 of the little-endian word.
DSV4_AVX2 inline __m256 decode8(uint32_t packed) {
  const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  const __m256i nibble =
      _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(packed)), shifts), _mm256_set1_epi32(15));
  // util/float_formats.h's e2m1_to_f32: the magnitude from bits 0–2 (permutevar8x32 reads only
  // those), bit 3 flips the sign, so nibble 8 is −0 as there.
  const __m256 magnitude = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
  const __m256 value = _mm256_permutevar8x32_ps(magnitude, nibble);
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(nibble, _mm256_set1_epi32(8)), 28);
  return _mm256_xor_ps(value, _mm256_castsi256_ps(sign));
}

template <bool kNvfp4, int kTokens>
DSV4_AVX2 void rows_pass(const WeightMatrix& w, int64_t r0, int64_t nr, const float* x, float* y,
                         int64_t y_stride) {
  constexpr int64_t kBlock = kNvfp4 ? kNVFP4BlockSize : kMXFP4BlockSize;
  static_assert(kBlock % 16 == 0, "a block holds whole 16-column steps");
  const int64_t K = w.cols;
  const __m256 global = _mm256_set1_ps(w.global_scale);
  for (int64_t i = 0; i < nr; ++i) {
    const int64_t r = r0 + i;
    const uint8_t* row = w.data + r * (K / 2);
    const uint8_t* srow = w.scale + r * (K / kBlock);
    __m256 lo[kTokens], hi[kTokens];  // lanes 0–7 and 8–15 of each token's 16-lane sum
    for (int t = 0; t < kTokens; ++t) lo[t] = hi[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < K / kBlock; ++b) {
      float s;
      if constexpr (kNvfp4) {
        s = e4m3_to_f32(srow[b]);
      } else {
        if (srow[b] == kE8M0Nan) {  // the scalar dequantiser raises the error that names it
          float unused[kBlock];
          w.dequant_block(r, b * kBlock, kBlock, unused);
        }
        s = e8m0_to_f32(srow[b]);
      }
      const __m256 scale = _mm256_set1_ps(s);
      for (int64_t c = b * kBlock; c < (b + 1) * kBlock; c += 16) {
        uint32_t packed[2];
        std::memcpy(packed, row + c / 2, 8);
        // (e2m1 · s) is exact; NVFP4's one rounding is the multiply by the global scale (quant.cpp).
        __m256 w_lo = _mm256_mul_ps(decode8(packed[0]), scale);
        __m256 w_hi = _mm256_mul_ps(decode8(packed[1]), scale);
        if constexpr (kNvfp4) {
          w_lo = _mm256_mul_ps(w_lo, global);
          w_hi = _mm256_mul_ps(w_hi, global);
        }
        for (int t = 0; t < kTokens; ++t) {
          const float* xc = x + t * K + c;
          lo[t] = _mm256_add_ps(lo[t], _mm256_mul_ps(_mm256_loadu_ps(xc), w_lo));
          hi[t] = _mm256_add_ps(hi[t], _mm256_mul_ps(_mm256_loadu_ps(xc + 8), w_hi));
        }
      }
    }
    for (int t = 0; t < kTokens; ++t) {
      alignas(32) float lanes[16];
      _mm256_store_ps(lanes, lo[t]);
      _mm256_store_ps(lanes + 8, hi[t]);
      float sum = 0.0f;  // dot()'s final reduction: lanes 0..15 in order, then its (empty) tail
      for (float v : lanes) sum += v;
      y[t * y_stride + i] = sum + 0.0f;
    }
  }
}

template <bool kNvfp4>
void rows_dot(const WeightMatrix& w, int64_t r0, int64_t nr, const float* x, int64_t n, float* y,
              int64_t y_stride) {
  for (int64_t t0 = 0; t0 < n; t0 += kTokensPerPass) {
    const float* xt = x + t0 * w.cols;
    float* yt = y + t0 * y_stride;
    switch (std::min<int64_t>(kTokensPerPass, n - t0)) {
      case 1: rows_pass<kNvfp4, 1>(w, r0, nr, xt, yt, y_stride); break;
      case 2: rows_pass<kNvfp4, 2>(w, r0, nr, xt, yt, y_stride); break;
      case 3: rows_pass<kNvfp4, 3>(w, r0, nr, xt, yt, y_stride); break;
      default: rows_pass<kNvfp4, 4>(w, r0, nr, xt, yt, y_stride); break;
    }
  }
}

}  // namespace

bool fp4_fused_available() {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
}

void fp4_rows_dot(const WeightMatrix& w, int64_t r0, int64_t nr, const float* x, int64_t n, float* y,
                  int64_t y_stride) {
  DSV4_CHECK_MSG(w.format == WeightFormat::kMXFP4 || w.format == WeightFormat::kNVFP4, w.name, ": ",
                 to_string(w.format), " is not FP4");
  DSV4_CHECK_MSG(w.data != nullptr && w.scale != nullptr, w.name);
  DSV4_CHECK_MSG(r0 >= 0 && nr >= 0 && r0 + nr <= w.rows && n >= 0, w.name);
  DSV4_CHECK_MSG(fp4_fused_available(), "fp4_rows_dot needs AVX2");
  if (w.format == WeightFormat::kNVFP4) rows_dot<true>(w, r0, nr, x, n, y, y_stride);
  else rows_dot<false>(w, r0, nr, x, n, y, y_stride);
}

#else  // not x86-64: linear_rows expands FP4 rows with the scalar dequantiser instead

bool fp4_fused_available() { return false; }

void fp4_rows_dot(const WeightMatrix& w, int64_t, int64_t, const float*, int64_t, float*, int64_t) {
  fail(w.name, ": the fused FP4 kernel needs x86-64 with AVX2");
}

#endif

}  // namespace dsv4
