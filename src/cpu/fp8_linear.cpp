// fp8_rows_dot's AVX2 build (cpu/fp8_linear.h). Like the FP4 kernel it walks a weight row 16
// columns at a time (the 16 lanes of cpu/tile_dot.h's dot) with the token passes outside, so a
// row is read from L1 once per pass of up to kTokens activation rows. Target attributes rather
// than a global -mavx2: the binary still runs on any x86-64 host. Compiled with -ffp-contract=off
// (CMakeLists.txt): the multiply and the add are two roundings, as in the contract.
#include "cpu/fp8_linear.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/tile_dot.h"  // lane_sum
#include "util/error.h"
#include "util/float_formats.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace dsv4 {

#if defined(__x86_64__)

namespace {

#define DSV4_AVX2_F16C __attribute__((target("avx2,f16c")))

// Activation rows that share one decode of the weights: 2 accumulators each, 8 of 16 registers.
constexpr int kTokens = 4;

// The scale of the block holding (r, c), read as the dequantiser reads it (a UE8M0 NaN byte
// raises its error, naming the tensor and the position).
float block_scale(const WeightMatrix& w, int64_t r, int64_t c) {
  const int64_t sc_cols = (w.cols + kFP8BlockSize - 1) / kFP8BlockSize;
  const int64_t at = (r / kFP8BlockSize) * sc_cols + c / kFP8BlockSize;
  if (w.scale_is_f32) {
    float s;
    std::memcpy(&s, w.scale + 4 * at, 4);
    return s;
  }
  if (w.scale[at] == kE8M0Nan) {
    float unused;
    w.dequant_block(r, c, 1, &unused);
  }
  return e8m0_to_f32(w.scale[at]);
}

// Whether bytes [p, p + n) hold an E4M3 NaN (0x7F or 0xFF): per 8 bytes, a byte's low 7 bits
// plus one carry into its bit 7 only when they are all ones (no carry crosses a byte).
bool has_e4m3_nan(const uint8_t* p, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    if (((v & 0x7F7F7F7F7F7F7F7Full) + 0x0101010101010101ull) & 0x8080808080808080ull) return true;
  }
  for (; i < n; ++i)
    if ((p[i] & 0x7F) == 0x7F) return true;
  return false;
}

// Columns c..c+15 as the dequantiser's weights, from their E4M3 bytes and 256 · scale: sign to F16
// bit 15, exponent and mantissa to bits 13..7, which is the value · 2^-8 as an F16 (an E4M3
// subnormal m · 2^-9 lands on the F16 subnormal m · 2^-17); converted exactly, then one multiply.
DSV4_AVX2_F16C inline void decode16(const uint8_t* p, __m256 scale256, __m256& lo, __m256& hi) {
  const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i h =
      _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi16(b, 8), _mm256_set1_epi16(int16_t(0x8000))),
                      _mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16(0x3F80)));
  lo = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), scale256);
  hi = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), scale256);
}

template <int kT>
DSV4_AVX2_F16C void avx2_pass(const WeightMatrix& w, int64_t r0, int64_t nr, const float* x, float* y,
                              int64_t y_stride) {
  const int64_t K = w.cols;
  alignas(32) float expanded[kFP8BlockSize];  // a block the shortcut cannot take, dequantised
  for (int64_t i = 0; i < nr; ++i) {
    const int64_t r = r0 + i;
    const uint8_t* row = w.data + r * K;
    __m256 lo[kT], hi[kT];  // lanes 0–7 and 8–15 of each token's 16-lane sum
    for (int t = 0; t < kT; ++t) lo[t] = hi[t] = _mm256_setzero_ps();
    for (int64_t c0 = 0; c0 < K; c0 += kFP8BlockSize) {
      const int64_t len = std::min(kFP8BlockSize, K - c0);
      const float s = block_scale(w, r, c0), s256 = s * 256.0f;
      const bool direct = !(std::isinf(s256) && std::isfinite(s)) && !has_e4m3_nan(row + c0, len);
      if (!direct) w.dequant_block(r, c0, len, expanded);
      const __m256 scale256 = _mm256_set1_ps(s256);
      for (int64_t c = c0; c < c0 + len; c += 16) {
        __m256 w_lo, w_hi;
        if (direct) {
          decode16(row + c, scale256, w_lo, w_hi);
        } else {
          w_lo = _mm256_load_ps(expanded + (c - c0));
          w_hi = _mm256_load_ps(expanded + (c - c0) + 8);
        }
        for (int t = 0; t < kT; ++t) {
          const float* xc = x + t * K + c;
          lo[t] = _mm256_add_ps(lo[t], _mm256_mul_ps(_mm256_loadu_ps(xc), w_lo));
          hi[t] = _mm256_add_ps(hi[t], _mm256_mul_ps(_mm256_loadu_ps(xc + 8), w_hi));
        }
      }
    }
    for (int t = 0; t < kT; ++t) {
      alignas(32) float lanes[16];
      _mm256_store_ps(lanes, lo[t]);
      _mm256_store_ps(lanes + 8, hi[t]);
      y[t * y_stride + i] = lane_sum(lanes);
    }
  }
}

}  // namespace

bool fp8_fused_available() {
  // F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know "f16c".
  static const bool ok = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __builtin_cpu_supports("avx2") && __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  }();
  return ok;
}

void fp8_rows_dot(const WeightMatrix& w, int64_t r0, int64_t nr, const float* x, int64_t n, float* y,
                  int64_t y_stride) {
  DSV4_CHECK_MSG(w.format == WeightFormat::kFP8Block, w.name, ": ", to_string(w.format), " is not FP8");
  DSV4_CHECK_MSG(w.data != nullptr && w.scale != nullptr, w.name);
  DSV4_CHECK_MSG(w.cols % 16 == 0, w.name, ": ", w.cols, " columns are not whole 16-lane steps");
  DSV4_CHECK_MSG(r0 >= 0 && nr >= 0 && r0 + nr <= w.rows && n >= 0, w.name);
  DSV4_CHECK_MSG(fp8_fused_available(), "fp8_rows_dot: this host has no AVX2 + F16C");
  for (int64_t t0 = 0; t0 < n; t0 += kTokens) {
    const float* xt = x + t0 * w.cols;
    float* yt = y + t0 * y_stride;
    switch (std::min<int64_t>(kTokens, n - t0)) {
      case 1: avx2_pass<1>(w, r0, nr, xt, yt, y_stride); break;
      case 2: avx2_pass<2>(w, r0, nr, xt, yt, y_stride); break;
      case 3: avx2_pass<3>(w, r0, nr, xt, yt, y_stride); break;
      default: avx2_pass<4>(w, r0, nr, xt, yt, y_stride); break;
    }
  }
}

#else  // not x86-64: linear_rows expands FP8 rows with the scalar dequantiser instead

bool fp8_fused_available() { return false; }

void fp8_rows_dot(const WeightMatrix& w, int64_t, int64_t, const float*, int64_t, float*, int64_t) {
  fail(w.name, ": the fused FP8 kernel needs x86-64 with AVX2 and F16C");
}

#endif

}  // namespace dsv4
