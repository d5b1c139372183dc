// fp4_rows_dot's two vector kernels. Both walk a weight row 16 columns at a time (the 16 lanes of
// cpu/tile_dot.h's dot), decode the columns' nibbles in registers, multiply by the block scale, then
// multiply and add into each activation row's accumulators; the token passes are the outer loop
// so that a tile of weight rows is read from L1/L2 once per pass.
//   - AVX2: two decodes of 8 columns (lanes 0–7 and 8–15), each a broadcast from memory, a shift,
//     an 8-entry lookup into the block's table of |e2m1| · scale and a sign flip.
//   - AVX-512 (F, BW, VL + VBMI): one 16-entry lookup per 16 columns into the block's table of e2m1 · scale
//     (the same products, made once per block), its indices cut from the columns' 8 bytes by one
//     multishift; 4 weight rows side by side: a lane's sum is one serial chain of adds (its order
//     is the contract), so independent rows are what fill the pipeline.
// Both convert a row's block scales 16 blocks at a time into a small buffer before running those
// blocks, so that making a block's table is a multiply by a scale broadcast from memory
// (bench/results/2026-12-06-cpu-fp4-scales16.md).
// Target attributes rather than a global -mavx2/-mavx512f: the binary still runs on any x86-64
// host. CMakeLists.txt compiles this file with -ffp-contract=off: AVX-512 brings FMA, which would
// change the roundings (see the header).
#include "cpu/fp4_linear.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "cpu/tile_dot.h"  // lane_sum
#include "util/error.h"
#include "util/float_formats.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace dsv4 {

const char* to_string(Fp4Kernel k) {
  switch (k) {
    case Fp4Kernel::kNone: return "none";
    case Fp4Kernel::kAvx2: return "avx2";
    case Fp4Kernel::kAvx512: return "avx512";
  }
  return "?";
}

#if defined(__x86_64__)

namespace {

#define DSV4_AVX2 __attribute__((target("avx2")))
#define DSV4_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi")))

// Row r's scale of block b: UE8M0 (MXFP4) or E4M3 (NVFP4, the global scale applied after).
template <bool kNvfp4>
float block_scale(const WeightMatrix& w, int64_t r, int64_t b, uint8_t byte) {
  if constexpr (kNvfp4) {
    return e4m3_to_f32(byte);
  } else {
    if (byte == kE8M0Nan) {  // the scalar dequantiser raises the error that names it
      float unused[kMXFP4BlockSize];
      w.dequant_block(r, b * kMXFP4BlockSize, kMXFP4BlockSize, unused);
    }
    return e8m0_to_f32(byte);
  }
}

// ---- AVX2

// Activation rows that share one decode of the weights: 2 accumulators each, 8 of 16 registers.
constexpr int kAvx2Tokens = 4;

// The nibble indices of columns c..c+7 from their 4 bytes (low nibble = even column, §11.3):
// lane j holds the word shifted right by 4j, so column c+j's nibble is in its bits 0–3. The word
// is broadcast straight from memory (a load, no shuffle); the lookup below reads only bits 0–2
// and the sign flip only bit 3, so the bits above need no mask.
DSV4_AVX2 inline __m256i nibble_lanes8(const uint8_t* p) {
  const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  int32_t packed;
  std::memcpy(&packed, p, 4);
  return _mm256_srlv_epi32(_mm256_set1_epi32(packed), shifts);
}

// The weights of 8 columns from their nibble lanes and the block's table of |e2m1| · scale
// (util/float_formats.h's e2m1_to_f32: the magnitude from bits 0–2, bit 3 flips the sign, so
// nibble 8 is −0 as there). The flip after the scaled lookup gives the dequantiser's value:
// rounding is symmetric in the sign.
DSV4_AVX2 inline __m256 lookup8(__m256 magnitudes, __m256i nibbles) {
  const __m256 value = _mm256_permutevar8x32_ps(magnitudes, nibbles);
  const __m256i sign = _mm256_and_si256(_mm256_slli_epi32(nibbles, 28), _mm256_set1_epi32(INT32_MIN));
  return _mm256_xor_ps(value, _mm256_castsi256_ps(sign));
}

// Row r's block scales for blocks [b0, b0 + 16) (fewer at the row's end) as FP32, scales[i] =
// block_scale, for the same reason as the AVX-512 kernel's block_scales16 below: a block's table
// is then a multiply by a scale broadcast from memory, and no scalar conversion sits in the loop.
// The conversion is the AVX-512 one again in 8-lane form: a scalar block_scale loop into the buffer
// measured 1.08–1.44x slower (bench/results/2026-12-06-cpu-fp4-scales16.md).
template <bool kNvfp4>
DSV4_AVX2 __attribute__((always_inline)) inline void avx2_block_scales16(const WeightMatrix& w, int64_t r, int64_t b0,
                                                                         float (&scales)[16]) {
  const int64_t blocks = w.cols / (kNvfp4 ? kNVFP4BlockSize : kMXFP4BlockSize);
  const uint8_t* bytes = w.scale + r * blocks + b0;
  if (blocks - b0 < 16) {  // no byte-masked loads in AVX2: a short group one scale at a time
    for (int64_t i = 0; i < blocks - b0; ++i) scales[i] = block_scale<kNvfp4>(w, r, b0 + i, bytes[i]);
    return;
  }
  if constexpr (!kNvfp4) {
    const __m128i all = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
    if (const int nan = _mm_movemask_epi8(_mm_cmpeq_epi8(all, _mm_set1_epi8(char(kE8M0Nan)))); nan != 0)
      block_scale<false>(w, r, b0 + __builtin_ctz(unsigned(nan)), kE8M0Nan);  // raises the dequantiser's error
  }
  for (int h = 0; h < 2; ++h) {
    const __m256i words = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes + 8 * h)));
    __m256i bits;
    if constexpr (kNvfp4) {  // e4m3_to_f32 per lane, as block_scales16 makes it
      const __m256i mag = _mm256_and_si256(words, _mm256_set1_epi32(0x7F));
      const __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(0x1p-9f));
      bits = _mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23));
      bits = _mm256_blendv_epi8(bits, _mm256_castps_si256(sub), _mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag));
      bits = _mm256_or_si256(bits, _mm256_slli_epi32(_mm256_and_si256(words, _mm256_set1_epi32(0x80)), 24));
      bits = _mm256_blendv_epi8(bits, _mm256_castps_si256(_mm256_set1_ps(NAN)),
                                _mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7F)));
    } else {  // 2^(byte − 127): the exponent field; byte 0's 2^-127 is the subnormal 0x00400000
      bits = _mm256_blendv_epi8(_mm256_slli_epi32(words, 23), _mm256_set1_epi32(0x00400000),
                                _mm256_cmpeq_epi32(words, _mm256_setzero_si256()));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(scales + 8 * h), bits);
  }
}

template <bool kNvfp4, int kTokens>
DSV4_AVX2 void avx2_pass(const WeightMatrix& w, int64_t r0, int64_t nr, const float* x, float* y, int64_t y_stride) {
  constexpr int64_t kBlock = kNvfp4 ? kNVFP4BlockSize : kMXFP4BlockSize;
  static_assert(kBlock % 16 == 0, "a block holds whole 16-column steps");
  const int64_t K = w.cols;
  const __m256 e2m1 = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
  const __m256 global = _mm256_set1_ps(w.global_scale);
  for (int64_t i = 0; i < nr; ++i) {
    const int64_t r = r0 + i;
    const uint8_t* row = w.data + r * (K / 2);
    __m256 lo[kTokens], hi[kTokens];  // lanes 0–7 and 8–15 of each token's 16-lane sum
    for (int t = 0; t < kTokens; ++t) lo[t] = hi[t] = _mm256_setzero_ps();
    alignas(32) float scales[16];
    const int64_t blocks = K / kBlock;
    for (int64_t b16 = 0; b16 < blocks; b16 += 16) {  // sixteen blocks' scales, then those blocks
      avx2_block_scales16<kNvfp4>(w, r, b16, scales);
      for (int64_t b = b16; b < std::min(b16 + 16, blocks); ++b) {
        // (e2m1 · s) is exact; NVFP4's one rounding is the multiply by the global scale (quant.cpp):
        // the same two multiplies per value as the scalar dequantiser, made once per block.
        __m256 table = _mm256_mul_ps(e2m1, _mm256_set1_ps(scales[b - b16]));
        if constexpr (kNvfp4) table = _mm256_mul_ps(table, global);
        for (int64_t c = b * kBlock; c < (b + 1) * kBlock; c += 16) {
          const __m256 w_lo = lookup8(table, nibble_lanes8(row + c / 2));
          const __m256 w_hi = lookup8(table, nibble_lanes8(row + c / 2 + 4));
          for (int t = 0; t < kTokens; ++t) {
            const float* xc = x + t * K + c;
            lo[t] = _mm256_add_ps(lo[t], _mm256_mul_ps(_mm256_loadu_ps(xc), w_lo));
            hi[t] = _mm256_add_ps(hi[t], _mm256_mul_ps(_mm256_loadu_ps(xc + 8), w_hi));
          }
        }
      }
    }
    for (int t = 0; t < kTokens; ++t) {
      alignas(32) float lanes[16];
      _mm256_store_ps(lanes, lo[t]);
      _mm256_store_ps(lanes + 8, hi[t]);
      y[t * y_stride + i] = lane_sum(lanes);
    }
  }
}

template <bool kNvfp4>
void avx2_rows_dot(const WeightMatrix& w, int64_t r0, int64_t nr, const float* x, int64_t n, float* y,
                   int64_t y_stride) {
  for (int64_t t0 = 0; t0 < n; t0 += kAvx2Tokens) {
    const float* xt = x + t0 * w.cols;
    float* yt = y + t0 * y_stride;
    switch (std::min<int64_t>(kAvx2Tokens, n - t0)) {
      case 1: avx2_pass<kNvfp4, 1>(w, r0, nr, xt, yt, y_stride); break;
      case 2: avx2_pass<kNvfp4, 2>(w, r0, nr, xt, yt, y_stride); break;
      case 3: avx2_pass<kNvfp4, 3>(w, r0, nr, xt, yt, y_stride); break;
      default: avx2_pass<kNvfp4, 4>(w, r0, nr, xt, yt, y_stride); break;
    }
  }
}

// ---- AVX-512

// GCC 12 reports the intrinsics' own self-initialised _mm512_undefined_* temporaries as (maybe)
// uninitialised once inlined here (GCC bug 105593, fixed in 13); nothing of this file's is.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// Weight rows and activation rows of one step: 16 accumulators, 4 tables and temporaries of 32
// registers.
constexpr int kAvx512Rows = 4, kAvx512Tokens = 4;

// The nibble indices of 16 columns from their 8 bytes: the 8 bytes go to every 64-bit lane (a
// broadcast load), and the multishift puts bits 8j..8j+7 of lane j into its byte 0 and bits
// 8j+4..8j+11 into its byte 4, so 32-bit lane 2j starts with byte j's low nibble (the even column,
// §11.3) and lane 2j + 1 with its high nibble; permutexvar reads only bits 0–3 of an index. That
// is 4 vector instructions per row and 16 columns with the lookup, multiply and add, where a
// zero-extension, a shift and an or made it 6 (bench/results/2026-12-06-cpu-fp4-multishift.md).
DSV4_AVX512 inline __m512i nibble_indices16(const uint8_t* p) {
  int64_t packed;
  std::memcpy(&packed, p, 8);
  constexpr auto offsets = [](int64_t j) { return 8 * j | (8 * j + 4) << 32; };
  const __m512i control = _mm512_setr_epi64(offsets(0), offsets(1), offsets(2), offsets(3), offsets(4), offsets(5),
                                            offsets(6), offsets(7));
  return _mm512_multishift_epi64_epi8(control, _mm512_set1_epi64(packed));
}

// The block scales of rows r0..r0+kRows-1 for blocks [b0, b0 + 16) (fewer at the row's end) as
// FP32, scales[j][i] = block_scale (e8m0_to_f32 or e4m3_to_f32): a block's table is then made with
// the scale broadcast from memory. Made per block from a scalar, the table took a byte load, a
// conversion, a move to a vector register and a broadcast: on Intel's server cores the last two
// share port 5 with the lookup's permutes, the loop's bottleneck.
// Inlined: as a call inside the block loop it made the compiler keep the accumulators in memory
// across every block (each zmm register is the caller's to save).
template <bool kNvfp4, int kRows>
DSV4_AVX512 __attribute__((always_inline)) inline void block_scales16(const WeightMatrix& w, int64_t r0, int64_t b0,
                                                                      float (&scales)[kRows][16]) {
  const int64_t blocks = w.cols / (kNvfp4 ? kNVFP4BlockSize : kMXFP4BlockSize);
  const __mmask16 live = __mmask16((1u << std::min<int64_t>(16, blocks - b0)) - 1u);
  for (int j = 0; j < kRows; ++j) {
    const __m128i bytes = _mm_maskz_loadu_epi8(live, w.scale + (r0 + j) * blocks + b0);
    const __m512i words = _mm512_cvtepu8_epi32(bytes);
    __m512i bits;
    if constexpr (kNvfp4) {
      // e4m3_to_f32 per lane: normal bytes rebias their exponent (mag << 20 + 120 << 23), the
      // subnormals (magnitude < 8) are m · 2^-9, the sign is or-ed in (−0 for 0x80, as there),
      // and 0x7F / 0xFF are the positive quiet NaN.
      const __m512i mag = _mm512_and_si512(words, _mm512_set1_epi32(0x7F));
      const __m512 sub = _mm512_mul_ps(_mm512_cvtepi32_ps(mag), _mm512_set1_ps(0x1p-9f));
      bits = _mm512_add_epi32(_mm512_slli_epi32(mag, 20), _mm512_set1_epi32(120 << 23));
      bits = _mm512_mask_mov_epi32(bits, _mm512_cmplt_epu32_mask(mag, _mm512_set1_epi32(8)), _mm512_castps_si512(sub));
      bits = _mm512_or_si512(bits, _mm512_slli_epi32(_mm512_and_si512(words, _mm512_set1_epi32(0x80)), 24));
      bits = _mm512_mask_mov_epi32(bits, _mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7F)),
                                   _mm512_castps_si512(_mm512_set1_ps(NAN)));
    } else {
      if (const __mmask16 nan = _mm_mask_cmpeq_epi8_mask(live, bytes, _mm_set1_epi8(char(kE8M0Nan))); nan != 0)
        block_scale<false>(w, r0 + j, b0 + __builtin_ctz(nan), kE8M0Nan);  // raises the dequantiser's error
      // 2^(byte − 127) is the FP32 with exponent field `byte`; byte 0's 2^-127 is the subnormal 0x00400000.
      bits = _mm512_mask_mov_epi32(_mm512_slli_epi32(words, 23), _mm512_cmpeq_epi32_mask(words, _mm512_setzero_si512()),
                                   _mm512_set1_epi32(0x00400000));
    }
    _mm512_store_ps(scales[j], _mm512_castsi512_ps(bits));
  }
}

// Rows r0..r0+kRows-1 times activation rows 0..kTokens-1, into y[t·y_stride + j].
template <bool kNvfp4, int kRows, int kTokens>
DSV4_AVX512 void avx512_step(const WeightMatrix& w, int64_t r0, const float* x, float* y, int64_t y_stride) {
  constexpr int64_t kBlock = kNvfp4 ? kNVFP4BlockSize : kMXFP4BlockSize;
  static_assert(kBlock % 16 == 0, "a block holds whole 16-column steps");
  const int64_t K = w.cols;
  // e2m1_to_f32 of nibbles 0..15: bit 3 is the sign, so nibble 8 is −0 as there.
  const __m512 e2m1 = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f,
                                     -2.0f, -3.0f, -4.0f, -6.0f);
  const __m512 global = _mm512_set1_ps(w.global_scale);
  __m512 acc[kRows][kTokens];
  for (int j = 0; j < kRows; ++j)
    for (int t = 0; t < kTokens; ++t) acc[j][t] = _mm512_setzero_ps();
  alignas(64) float scales[kRows][16];
  const int64_t blocks = K / kBlock;
  // Sixteen blocks' scales, then those blocks: with the scales' code inside the block loop (a
  // branch every 16th block) GCC kept the accumulators in memory, stored every block.
  for (int64_t b16 = 0; b16 < blocks; b16 += 16) {
    block_scales16<kNvfp4, kRows>(w, r0, b16, scales);
    for (int64_t b = b16; b < std::min(b16 + 16, blocks); ++b) {
      // The block's 16 possible weights per row: (e2m1 · s) exact, then NVFP4's one rounding by
      // the global scale, the same two multiplies per value as the scalar dequantiser.
      __m512 table[kRows];
      for (int j = 0; j < kRows; ++j) {
        table[j] = _mm512_mul_ps(e2m1, _mm512_set1_ps(scales[j][b - b16]));
        if constexpr (kNvfp4) table[j] = _mm512_mul_ps(table[j], global);
      }
      for (int64_t c = b * kBlock; c < (b + 1) * kBlock; c += 16) {
        for (int j = 0; j < kRows; ++j) {
          const __m512 wv =
              _mm512_permutexvar_ps(nibble_indices16(w.data + (r0 + j) * (K / 2) + c / 2), table[j]);
          for (int t = 0; t < kTokens; ++t)
            acc[j][t] = _mm512_add_ps(acc[j][t], _mm512_mul_ps(_mm512_loadu_ps(x + t * K + c), wv));
        }
      }
    }
  }
  for (int j = 0; j < kRows; ++j)
    for (int t = 0; t < kTokens; ++t) {
      alignas(64) float lanes[16];
      _mm512_store_ps(lanes, acc[j][t]);
      y[t * y_stride + j] = lane_sum(lanes);
    }
}

template <bool kNvfp4, int kRows>
void avx512_step_tokens(int64_t tokens, const WeightMatrix& w, int64_t r0, const float* x, float* y,
                        int64_t y_stride) {
  switch (tokens) {
    case 1: avx512_step<kNvfp4, kRows, 1>(w, r0, x, y, y_stride); break;
    case 2: avx512_step<kNvfp4, kRows, 2>(w, r0, x, y, y_stride); break;
    case 3: avx512_step<kNvfp4, kRows, 3>(w, r0, x, y, y_stride); break;
    default: avx512_step<kNvfp4, kRows, 4>(w, r0, x, y, y_stride); break;
  }
}

template <bool kNvfp4>
void avx512_rows_dot(const WeightMatrix& w, int64_t r0, int64_t nr, const float* x, int64_t n, float* y,
                     int64_t y_stride) {
  for (int64_t t0 = 0; t0 < n; t0 += kAvx512Tokens) {
    const int64_t tokens = std::min<int64_t>(kAvx512Tokens, n - t0);
    const float* xt = x + t0 * w.cols;
    for (int64_t i = 0; i < nr; i += kAvx512Rows) {
      float* yt = y + t0 * y_stride + i;
      switch (std::min<int64_t>(kAvx512Rows, nr - i)) {
        case 1: avx512_step_tokens<kNvfp4, 1>(tokens, w, r0 + i, xt, yt, y_stride); break;
        case 2: avx512_step_tokens<kNvfp4, 2>(tokens, w, r0 + i, xt, yt, y_stride); break;
        case 3: avx512_step_tokens<kNvfp4, 3>(tokens, w, r0 + i, xt, yt, y_stride); break;
        default: avx512_step_tokens<kNvfp4, 4>(tokens, w, r0 + i, xt, yt, y_stride); break;
      }
    }
  }
}

#pragma GCC diagnostic pop

}  // namespace

bool fp4_kernel_runs_here(Fp4Kernel k) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  // Every Hopper host's CPU has VBMI (Sapphire Rapids and later, Genoa and later); an AVX-512 host
  // without it (Skylake-SP, Cascade Lake) takes the AVX2 kernel.
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi");
  switch (k) {
    case Fp4Kernel::kNone: return true;
    case Fp4Kernel::kAvx2: return avx2;
    case Fp4Kernel::kAvx512: return avx512;
  }
  return false;
}

Fp4Kernel fp4_best_kernel() {
  static const Fp4Kernel best = [] {
    if (const char* env = std::getenv("DSV4_FP4_KERNEL"); env && *env) {
      for (Fp4Kernel k : {Fp4Kernel::kAvx2, Fp4Kernel::kAvx512}) {
        if (std::string_view(env) != to_string(k)) continue;
        if (!fp4_kernel_runs_here(k)) fail("DSV4_FP4_KERNEL=", env, ": this host cannot run that kernel");
        return k;
      }
      fail("DSV4_FP4_KERNEL=", env, ": not a kernel (avx2 or avx512)");
    }
    return fp4_kernel_runs_here(Fp4Kernel::kAvx512) ? Fp4Kernel::kAvx512
           : fp4_kernel_runs_here(Fp4Kernel::kAvx2) ? Fp4Kernel::kAvx2
                                                    : Fp4Kernel::kNone;
  }();
  return best;
}

void fp4_rows_dot(const WeightMatrix& w, int64_t r0, int64_t nr, const float* x, int64_t n, float* y,
                  int64_t y_stride, Fp4Kernel kernel) {
  DSV4_CHECK_MSG(w.format == WeightFormat::kMXFP4 || w.format == WeightFormat::kNVFP4, w.name, ": ",
                 to_string(w.format), " is not FP4");
  DSV4_CHECK_MSG(w.data != nullptr && w.scale != nullptr, w.name);
  DSV4_CHECK_MSG(r0 >= 0 && nr >= 0 && r0 + nr <= w.rows && n >= 0, w.name);
  DSV4_CHECK_MSG(kernel != Fp4Kernel::kNone && fp4_kernel_runs_here(kernel), "fp4_rows_dot: the ",
                 to_string(kernel), " kernel does not run on this host");
  const bool nvfp4 = w.format == WeightFormat::kNVFP4;
  if (kernel == Fp4Kernel::kAvx512) {
    if (nvfp4) avx512_rows_dot<true>(w, r0, nr, x, n, y, y_stride);
    else avx512_rows_dot<false>(w, r0, nr, x, n, y, y_stride);
  } else {
    if (nvfp4) avx2_rows_dot<true>(w, r0, nr, x, n, y, y_stride);
    else avx2_rows_dot<false>(w, r0, nr, x, n, y, y_stride);
  }
}

#else  // not x86-64: linear_rows expands FP4 rows with the scalar dequantiser instead

bool fp4_kernel_runs_here(Fp4Kernel k) { return k == Fp4Kernel::kNone; }
Fp4Kernel fp4_best_kernel() { return Fp4Kernel::kNone; }

void fp4_rows_dot(const WeightMatrix& w, int64_t, int64_t, const float*, int64_t, float*, int64_t, Fp4Kernel) {
  fail(w.name, ": the fused FP4 kernel needs x86-64 with AVX2");
}

#endif

}  // namespace dsv4
