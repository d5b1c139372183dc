// Scalar quantisers for the number formats declared in float_formats.h (E4M3, UE8M0, E2M1).
// Block layouts and whole-tensor dequantisation live in model/quant.cpp.
#include "util/float_formats.h"

#include <algorithm>
#include <cmath>

namespace dsv4 {

namespace {
constexpr int kE4M3Bias = 7;
constexpr int kE4M3MinNormalExp = 1 - kE4M3Bias;  // 2^-6, smallest normal E4M3
constexpr int kE4M3SubnormalShift = 9;            // subnormal step 2^-9 = 2^-6 / 8
constexpr uint8_t kE4M3MaxCode = 0x7E;            // 448
constexpr uint8_t kE4M3NanCode = 0x7F;
constexpr int kE8M0Bias = 127;
constexpr int kE8M0MaxByte = 254;  // 2^127; 255 is NaN
}  // namespace

uint8_t f32_to_e4m3(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  if (std::isnan(f)) return uint8_t(sign | kE4M3NanCode);
  const float a = std::fabs(f);
  if (a >= kE4M3Max) return uint8_t(sign | kE4M3MaxCode);  // saturate (also ±inf), §11.2
  if (a < std::ldexp(1.0f, kE4M3MinNormalExp)) {
    // Subnormal range: value = m · 2^-9, m in [0, 8]; m = 8 is the smallest normal (code 0x08).
    // a · 2^9 is exact in FP32, nearbyint rounds half to even.
    const int m = int(std::nearbyint(std::ldexp(a, kE4M3SubnormalShift)));
    return uint8_t(sign | m);
  }
  int e2 = 0;
  const float m = std::frexp(a, &e2);  // a = m · 2^e2, m in [0.5, 1)
  int exp = e2 - 1;                    // a = (2m) · 2^exp, 2m in [1, 2)
  int man = int(std::nearbyint((2.0f * m - 1.0f) * 8.0f));  // exact product, RNE
  if (man == 8) { man = 0; ++exp; }
  const int code = ((exp + kE4M3Bias) << 3) | man;
  return uint8_t(sign | std::min(code, int(kE4M3MaxCode)));
}

uint8_t ue8m0_scale_for(float amax, float max_value, float floor_amax) {
  if (std::isnan(amax)) return kE8M0Nan;
  const float x = std::max(amax, floor_amax) / max_value;
  if (std::isinf(x)) return kE8M0MaxByte;
  // ceil(log2(x)) computed exactly: x = m · 2^e with m in [0.5, 1); x is a power of two exactly
  // when m == 0.5. (A float log2 can round just-above-power-of-two inputs down and return a
  // scale that overflows the element format; this never does.)
  int e = 0;
  const float m = std::frexp(x, &e);
  const int ceil_log2 = (m == 0.5f) ? e - 1 : e;
  return uint8_t(std::clamp(ceil_log2 + kE8M0Bias, 0, kE8M0MaxByte));
}

uint8_t f32_to_e2m1(float f) {
  const uint8_t sign = std::signbit(f) ? 0x8 : 0x0;
  const float a = std::fabs(f);
  // Grid 0, .5, 1, 1.5, 2, 3, 4, 6 (codes 0..7). Midpoints break ties towards the even code
  // (even mantissa bit): 0.25→0, 0.75→1.0, 1.25→1.0, 1.75→2, 2.5→2, 3.5→4, 5→4. NaN and
  // anything above 6 saturate to 6 (the reference clamps to ±6 before the cast, §12).
  uint8_t code;
  if (std::isnan(a)) code = 7;
  else if (a <= 0.25f) code = 0;
  else if (a < 0.75f) code = 1;
  else if (a <= 1.25f) code = 2;
  else if (a < 1.75f) code = 3;
  else if (a <= 2.5f) code = 4;
  else if (a < 3.5f) code = 5;
  else if (a <= 5.0f) code = 6;
  else code = 7;
  return uint8_t(sign | code);
}

}  // namespace dsv4
