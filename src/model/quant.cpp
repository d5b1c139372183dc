// Scalar dequantisers (the ground truth for kernels), block quantisers for the official numerics
// (§12) and packers for fixtures. Element conversions are in util/float_formats.*; which tensor
// has which format is decided by model/weights.cpp.
#include "model/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/error.h"
#include "util/float_formats.h"

namespace dsv4 {

namespace {
// FP4 round-trip floor (§12): max(amax, 6·2^-126) so the scale never drops below 2^-126.
const float kFp4AmaxFloor = kE2M1Max * std::ldexp(1.0f, -126);
// Packers: the smallest UE8M0 scale (byte 0, 2^-127) for an all-zero block.
const float kPackE4M3Floor = kE4M3Max * std::ldexp(1.0f, -127);
const float kPackE2M1Floor = kE2M1Max * std::ldexp(1.0f, -127);

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

uint8_t nibble_at(const uint8_t* row, int64_t c) {  // row: [cols/2] packed E2M1, §11.3
  const uint8_t b = row[c >> 1];
  return (c & 1) ? uint8_t(b >> 4) : uint8_t(b & 0xF);
}

// Every E4M3 code decoded once by the scalar formula (float_formats.h): the CPU backend expands
// weights on every use, and a table lookup there is several times cheaper than the decode.
struct E4M3Table {
  float value[256];
  E4M3Table() {
    for (int b = 0; b < 256; ++b) value[b] = e4m3_to_f32(uint8_t(b));
  }
};
const E4M3Table kE4M3Table;

// Every packed E2M1 byte decoded to its (even, odd) column pair (§11.3: low nibble first).
struct E2M1PairTable {
  float value[256][2];
  E2M1PairTable() {
    for (int b = 0; b < 256; ++b) {
      value[b][0] = e2m1_to_f32(uint8_t(b & 0xF));
      value[b][1] = e2m1_to_f32(uint8_t(b >> 4));
    }
  }
};
const E2M1PairTable kE2M1PairTable;
}  // namespace

const char* to_string(WeightFormat f) {
  switch (f) {
    case WeightFormat::kF32: return "F32";
    case WeightFormat::kBF16: return "BF16";
    case WeightFormat::kF16: return "F16";
    case WeightFormat::kFP8Block: return "FP8-block";
    case WeightFormat::kMXFP4: return "MXFP4";
    case WeightFormat::kNVFP4: return "NVFP4";
    case WeightFormat::kI64: return "I64";
    case WeightFormat::kI32: return "I32";
  }
  return "?";
}

std::vector<int64_t> packed_data_shape(WeightFormat f, int64_t rows, int64_t cols) {
  if (f == WeightFormat::kMXFP4 || f == WeightFormat::kNVFP4) return {rows, cols / 2};
  return {rows, cols};
}

std::vector<int64_t> scale_shape(WeightFormat f, int64_t rows, int64_t cols) {
  switch (f) {
    case WeightFormat::kFP8Block:
      return {ceil_div(rows, kFP8BlockSize), ceil_div(cols, kFP8BlockSize)};
    case WeightFormat::kMXFP4: return {rows, cols / kMXFP4BlockSize};
    case WeightFormat::kNVFP4: return {rows, cols / kNVFP4BlockSize};
    default: return {};
  }
}

int64_t scale_numel(WeightFormat f, int64_t rows, int64_t cols) {
  const auto s = scale_shape(f, rows, cols);
  return s.empty() ? 0 : s[0] * s[1];
}

float WeightMatrix::at(int64_t r, int64_t c) const {
  float v = 0.0f;
  dequant_block(r, c, 1, &v);
  return v;
}

// Dequantises columns [c0, c0+n) of row r. Every block scale is read through here, so a UE8M0
// NaN byte is rejected with the tensor name and position instead of turning into NaN weights.
void WeightMatrix::dequant_block(int64_t r, int64_t c0, int64_t n, float* out) const {
  DSV4_CHECK_MSG(data != nullptr, name);
  DSV4_CHECK_MSG(r >= 0 && r < rows && c0 >= 0 && n >= 0 && c0 + n <= cols, name);
  auto e8m0 = [&](uint8_t b, int64_t sr, int64_t sc) {
    if (b == kE8M0Nan) fail(name, ": scale [", sr, ", ", sc, "] is the UE8M0 NaN byte 0xFF");
    return e8m0_to_f32(b);
  };
  switch (format) {
    case WeightFormat::kF32: {
      const uint8_t* p = data + (r * cols + c0) * 4;
      std::memcpy(out, p, size_t(n) * 4);
      return;
    }
    case WeightFormat::kBF16:
    case WeightFormat::kF16: {
      const uint8_t* p = data + (r * cols + c0) * 2;
      // Separate loops so the BF16 one (a 16-bit shift) vectorises.
      if (format == WeightFormat::kBF16) {
        for (int64_t i = 0; i < n; ++i) {
          uint16_t h;
          std::memcpy(&h, p + 2 * i, 2);
          out[i] = bf16_to_f32(h);
        }
      } else {
        for (int64_t i = 0; i < n; ++i) {
          uint16_t h;
          std::memcpy(&h, p + 2 * i, 2);
          out[i] = f16_to_f32(h);
        }
      }
      return;
    }
    case WeightFormat::kFP8Block: {  // §11.2
      DSV4_CHECK_MSG(scale != nullptr, name);
      const int64_t sc_cols = ceil_div(cols, kFP8BlockSize), sr = r / kFP8BlockSize;
      const uint8_t* row = data + r * cols;
      // One scale per 128-column run: the scale is looked up once per block, not per element.
      for (int64_t c = c0; c < c0 + n;) {
        const int64_t sc = c / kFP8BlockSize, end = std::min(c0 + n, (sc + 1) * kFP8BlockSize);
        float s;
        if (scale_is_f32) std::memcpy(&s, scale + 4 * (sr * sc_cols + sc), 4);
        else s = e8m0(scale[sr * sc_cols + sc], sr, sc);
        for (; c < end; ++c) out[c - c0] = kE4M3Table.value[row[c]] * s;
      }
      return;
    }
    case WeightFormat::kMXFP4: {  // §11.3
      DSV4_CHECK_MSG(scale != nullptr, name);
      const uint8_t* row = data + r * (cols / 2);
      const uint8_t* srow = scale + r * (cols / kMXFP4BlockSize);
      for (int64_t c = c0; c < c0 + n;) {
        const int64_t sc = c / kMXFP4BlockSize, end = std::min(c0 + n, (sc + 1) * kMXFP4BlockSize);
        const float s = e8m0(srow[sc], r, sc);
        if (c % 2 == 0) {  // whole bytes: low nibble = even column, high = odd (§11.3)
          for (; c + 1 < end; c += 2) {
            const float* pair = kE2M1PairTable.value[row[c >> 1]];
            out[c - c0] = pair[0] * s;
            out[c + 1 - c0] = pair[1] * s;
          }
        }
        for (; c < end; ++c) out[c - c0] = e2m1_to_f32(nibble_at(row, c)) * s;
      }
      return;
    }
    case WeightFormat::kNVFP4: {  // §11.6: weight_scale_2 only; input_scale is for activations
      DSV4_CHECK_MSG(scale != nullptr, name);
      const uint8_t* row = data + r * (cols / 2);
      const uint8_t* srow = scale + r * (cols / kNVFP4BlockSize);
      for (int64_t c = c0; c < c0 + n;) {
        const int64_t sc = c / kNVFP4BlockSize, end = std::min(c0 + n, (sc + 1) * kNVFP4BlockSize);
        const float s = e4m3_to_f32(srow[sc]);
        // (e2m1 · s) is exact in FP32; the one rounding is the multiply by the global scale.
        for (; c < end; ++c) out[c - c0] = e2m1_to_f32(nibble_at(row, c)) * s * global_scale;
      }
      return;
    }
    case WeightFormat::kI64:
    case WeightFormat::kI32:
      for (int64_t i = 0; i < n; ++i) out[i] = float(int_at(r, c0 + i));
      return;
  }
}

void WeightMatrix::dequant_rows(int64_t r0, int64_t n, float* out) const {
  DSV4_CHECK_MSG(r0 >= 0 && n >= 0 && r0 + n <= rows, name);
  for (int64_t i = 0; i < n; ++i) dequant_block(r0 + i, 0, cols, out + i * cols);
}

int64_t WeightMatrix::int_at(int64_t r, int64_t c) const {
  DSV4_CHECK_MSG(data != nullptr, name);
  DSV4_CHECK_MSG(r >= 0 && r < rows && c >= 0 && c < cols, name);
  if (format == WeightFormat::kI64) {
    int64_t v;
    std::memcpy(&v, data + (r * cols + c) * 8, 8);
    return v;
  }
  DSV4_CHECK_MSG(format == WeightFormat::kI32, name, ": int_at on ", to_string(format));
  int32_t v;
  std::memcpy(&v, data + (r * cols + c) * 4, 4);
  return v;
}

namespace {

// Each block of x through (x / s) → the format → · s, with s the UE8M0 scale of the block's amax
// against the format's largest value. Division by a power of two is exact, so this is the
// reference's quantise-dequantise.
template <float (*kRound)(float)>
void roundtrip_blocks(float* x, int64_t n, int64_t block, float format_max, float amax_floor) {
  DSV4_CHECK(block > 0 && n >= 0);
  for (int64_t b0 = 0; b0 < n; b0 += block) {
    const int64_t len = std::min(block, n - b0);
    float amax = 0.0f;
    for (int64_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(x[b0 + i]));
    const float s = e8m0_to_f32(ue8m0_scale_for(amax, format_max, amax_floor));
    for (int64_t i = 0; i < len; ++i) x[b0 + i] = kRound(x[b0 + i] / s) * s;
  }
}

}  // namespace

void fp8_roundtrip_blocks(float* x, int64_t n, int64_t block) {
  roundtrip_blocks<round_e4m3>(x, n, block, kE4M3Max, kActAmaxFloor);
}

void fp4_roundtrip_blocks(float* x, int64_t n, int64_t block) {
  roundtrip_blocks<round_e2m1>(x, n, block, kE2M1Max, kFp4AmaxFloor);
}

PackedWeight pack_fp8_block(const float* w, int64_t rows, int64_t cols) {
  DSV4_CHECK(rows >= 0 && cols >= 0);
  const int64_t sr = ceil_div(rows, kFP8BlockSize), sc = ceil_div(cols, kFP8BlockSize);
  PackedWeight p;
  p.data.resize(size_t(rows * cols));
  p.scale.resize(size_t(sr * sc));
  for (int64_t bi = 0; bi < sr; ++bi)
    for (int64_t bj = 0; bj < sc; ++bj) {
      const int64_t r1 = std::min(rows, (bi + 1) * kFP8BlockSize);
      const int64_t c1 = std::min(cols, (bj + 1) * kFP8BlockSize);
      float amax = 0.0f;
      for (int64_t r = bi * kFP8BlockSize; r < r1; ++r)
        for (int64_t c = bj * kFP8BlockSize; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
      const uint8_t sb = ue8m0_scale_for(amax, kE4M3Max, kPackE4M3Floor);
      p.scale[size_t(bi * sc + bj)] = sb;
      const float s = e8m0_to_f32(sb);
      for (int64_t r = bi * kFP8BlockSize; r < r1; ++r)
        for (int64_t c = bj * kFP8BlockSize; c < c1; ++c)
          p.data[size_t(r * cols + c)] = f32_to_e4m3(w[r * cols + c] / s);
    }
  return p;
}

PackedWeight pack_mxfp4(const float* w, int64_t rows, int64_t cols) {
  DSV4_CHECK(rows >= 0 && cols >= 0 && cols % kMXFP4BlockSize == 0);
  PackedWeight p;
  p.data.assign(size_t(rows * cols / 2), 0);
  p.scale.resize(size_t(rows * cols / kMXFP4BlockSize));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < cols / kMXFP4BlockSize; ++b) {
      const float* x = w + r * cols + b * kMXFP4BlockSize;
      float amax = 0.0f;
      for (int64_t i = 0; i < kMXFP4BlockSize; ++i) amax = std::max(amax, std::fabs(x[i]));
      const uint8_t sb = ue8m0_scale_for(amax, kE2M1Max, kPackE2M1Floor);
      p.scale[size_t(r * (cols / kMXFP4BlockSize) + b)] = sb;
      const float s = e8m0_to_f32(sb);
      for (int64_t i = 0; i < kMXFP4BlockSize; ++i) {
        const int64_t c = b * kMXFP4BlockSize + i;
        const uint8_t q = f32_to_e2m1(x[i] / s);
        p.data[size_t(r * (cols / 2) + c / 2)] |= uint8_t((c & 1) ? q << 4 : q);
      }
    }
  return p;
}

PackedWeight pack_nvfp4(const float* w, int64_t rows, int64_t cols, float global_scale) {
  DSV4_CHECK(rows >= 0 && cols >= 0 && cols % kNVFP4BlockSize == 0 && global_scale > 0.0f);
  PackedWeight p;
  p.data.assign(size_t(rows * cols / 2), 0);
  p.scale.resize(size_t(rows * cols / kNVFP4BlockSize));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < cols / kNVFP4BlockSize; ++b) {
      const float* x = w + r * cols + b * kNVFP4BlockSize;
      float amax = 0.0f;
      for (int64_t i = 0; i < kNVFP4BlockSize; ++i) amax = std::max(amax, std::fabs(x[i]));
      // ModelOpt convention (§11.6): block scale = amax / 6 relative to the global scale, in E4M3.
      const uint8_t sb = f32_to_e4m3(amax / kE2M1Max / global_scale);
      p.scale[size_t(r * (cols / kNVFP4BlockSize) + b)] = sb;
      const float s = e4m3_to_f32(sb) * global_scale;
      for (int64_t i = 0; i < kNVFP4BlockSize; ++i) {
        const int64_t c = b * kNVFP4BlockSize + i;
        const uint8_t q = s > 0.0f ? f32_to_e2m1(x[i] / s) : 0;
        p.data[size_t(r * (cols / 2) + c / 2)] |= uint8_t((c & 1) ? q << 4 : q);
      }
    }
  return p;
}

}  // namespace dsv4
