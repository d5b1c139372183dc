// Scalar number formats: BF16, F16, FP8 E4M3 (OCP), UE8M0 scales, FP4 E2M1.
// These are the ground truth that every block format (model/quant.h) and every kernel is tested
// against; architecture.md §11.2, §11.3, §12. Block layouts live in model/quant.h, not here.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace dsv4 {

constexpr float kE4M3Max = 448.0f;  // (1 + 6/8)·2^8, largest finite OCP E4M3
constexpr float kE2M1Max = 6.0f;    // (1 + 1/2)·2^2, largest E2M1
constexpr uint8_t kE8M0Nan = 0xFF;  // the one non-finite UE8M0 byte

inline float bits_to_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// ---- BF16 ----
inline float bf16_to_f32(uint16_t h) { return bits_to_f32(uint32_t(h) << 16); }
// Round to nearest even; NaN stays NaN (quiet).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// ---- F16 (IEEE half) ----
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0) {
    float v = std::ldexp(float(man), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (man << 13));
  return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

// ---- FP8 E4M3 (OCP "fn": no infinities, 0x7f/0xff = NaN, max 448) ----
inline float e4m3_to_f32(uint8_t b) {
  const uint32_t sign = uint32_t(b & 0x80) << 24;
  const uint32_t exp = (b >> 3) & 0xf, man = b & 0x7;
  if (exp == 0xf && man == 0x7) return NAN;
  if (exp == 0) {  // subnormal: man/8 · 2^-6 = man · 2^-9 (exact in FP32)
    const float v = float(man) * 0x1p-9f;
    return sign ? -v : v;
  }
  // Normal: rebias the exponent (7 -> 127) and widen the 3-bit mantissa; built from bits
  // because this sits in the CPU backend's weight-expansion loop (ldexp there cost 40 % of decode).
  return bits_to_f32(sign | ((exp + 120) << 23) | (man << 20));
}
// Round to nearest even with saturation to ±448 (the reference casts after clamping to ±448).
uint8_t f32_to_e4m3(float f);
inline float round_e4m3(float f) { return e4m3_to_f32(f32_to_e4m3(f)); }

// ---- UE8M0: a bare power-of-two exponent, value 2^(b-127); 0xFF is NaN ----
inline float e8m0_to_f32(uint8_t b) {
  if (b == kE8M0Nan) return NAN;
  if (b == 0) return 0x1p-127f;  // the one subnormal power of two: FP32 bits 0x00400000
  return bits_to_f32(uint32_t(b) << 23);  // 2^(b-127) is exactly an FP32 with exponent field b
}
// Power-of-two scale rounded up so that amax/scale <= max_value (§12):
// 2^ceil(log2(max(amax, floor)/max_value)), returned as its UE8M0 byte.
uint8_t ue8m0_scale_for(float amax, float max_value, float floor_amax);

// ---- FP4 E2M1: nibble -> value (bit 3 is the sign) ----
inline float e2m1_to_f32(uint8_t nibble) {
  static constexpr float kMagnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float v = kMagnitude[nibble & 7];
  return (nibble & 8) ? -v : v;
}
// Round to nearest (ties to even mantissa), saturating at ±6.
uint8_t f32_to_e2m1(float f);
inline float round_e2m1(float f) { return e2m1_to_f32(f32_to_e2m1(f)); }

}  // namespace dsv4
