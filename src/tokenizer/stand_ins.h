// Lets PCRE2's fast native \p{..} classes split text that holds "drifting" code points (whose
// category PCRE2's older Unicode tables see differently, unicode_drift.h): each such character is
// replaced, at the same byte length, by a stand-in of its Unicode 16 category that no literal of the
// patterns mentions, so every pattern treats the two alike. Used by pretokenizer.cpp.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/unicode_tables.h"

namespace dsv4 {

class DriftStandIns {
 public:
  // `native_patterns`: the PCRE2 patterns that will run (regex_translate.h's `native`); `literals`:
  // the plain-string split patterns. When a pattern holds syntax whose meaning depends on more than
  // the category (\w, \d, \b, scripts, (?i), ...) stand-ins are disabled and every drifting text
  // needs the exact patterns.
  DriftStandIns(const std::vector<std::string>& native_patterns, const std::vector<std::string>& literals);

  enum class Outcome { kNoDrift, kSubstituted, kNeedsExact };
  // kSubstituted: `out` holds `text` with the stand-ins in place (same length, same offsets).
  Outcome substitute(std::string_view text, std::string& out) const;

 private:
  bool in_hull(uint32_t cp) const;
  bool scan_pattern(std::string_view p);  // false: unsupported syntax for stand-ins

  bool enabled_ = true;
  std::vector<unicode::Range> hull_;  // every non-ASCII code point a pattern literal mentions
  std::array<std::array<uint32_t, 3>, unicode::kGcCount> stand_in_{};  // [gc][utf8 length - 2], 0: none
};

}  // namespace dsv4
