// Unicode 16.0 General_Category (as runs) and White_Space: the character classes Oniguruma, and so
// HF `tokenizers`, uses for \p{..} and \s. Generated data (unicode_tables.cpp); use: regex_translate.h.
#pragma once

#include <cstdint>
#include <span>

namespace dsv4::unicode {

inline constexpr const char* kVersion = "16.0.0";

enum class Gc : uint8_t {
  Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps, Pe,
  Pi, Pf, Po, Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co, Cn,
};
inline constexpr int kGcCount = 30;

// Category `gc` holds from `first` up to the next run's `first` - 1 (the last run to U+10FFFF).
struct GcRun {
  uint32_t first;
  Gc gc;
};
struct Range {
  uint32_t first, last;  // inclusive
};

extern const std::span<const GcRun> kGcRuns;    // sorted, from U+0000
extern const std::span<const Range> kWhiteSpace;  // sorted

}  // namespace dsv4::unicode
