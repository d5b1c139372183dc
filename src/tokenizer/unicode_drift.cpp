// Finds the code points whose category PCRE2 sees differently from unicode_tables.cpp (see
// unicode_drift.h), by asking PCRE2 itself; the regex rewriting is regex_translate.cpp.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/unicode_drift.h"

#include <pcre2.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

#include "tokenizer/unicode_tables.h"
#include "util/error.h"
#include "util/utf8.h"

namespace dsv4::unicode {

namespace {

constexpr uint32_t kCodePoints = 0x110000;

// One bit per code point: PCRE2's \p{gc} disagrees with kGcRuns. For each run of one category
// in kGcRuns, the run's characters are matched against [^\p{gc}] and every hit is a drift.
std::vector<bool> compute_drift() {
  static const char* const kName[kGcCount] = {
      "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
      "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"};
  std::vector<pcre2_code*> not_gc(kGcCount);
  for (int g = 0; g < kGcCount; ++g) {
    const std::string pattern = cat("[^\\p{", kName[g], "}]");
    int error = 0;
    PCRE2_SIZE offset = 0;
    not_gc[g] = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    DSV4_CHECK(not_gc[g]);
    pcre2_jit_compile(not_gc[g], PCRE2_JIT_COMPLETE);
  }
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  std::vector<bool> drift(kCodePoints, false);
  std::string chars;
  for (size_t r = 0; r < kGcRuns.size(); ++r) {
    const uint32_t first = kGcRuns[r].first;
    const uint32_t last = r + 1 < kGcRuns.size() ? kGcRuns[r + 1].first - 1 : kCodePoints - 1;
    if (kGcRuns[r].gc == Gc::Cs) continue;  // surrogates never occur in UTF-8 text
    chars.clear();
    for (uint32_t cp = first; cp <= last; ++cp) utf8::append(chars, cp);
    pcre2_code* re = not_gc[static_cast<int>(kGcRuns[r].gc)];
    size_t start = 0;
    while (start < chars.size()) {
      const int rc = pcre2_match(re, reinterpret_cast<PCRE2_SPTR>(chars.data()), chars.size(), start,
                                 PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      DSV4_CHECK(rc > 0);
      size_t at = pcre2_get_ovector_pointer(md)[0];
      drift[next_code_point(chars, at)] = true;
      start = at;
    }
  }
  pcre2_match_data_free(md);
  for (pcre2_code* re : not_gc) pcre2_code_free(re);
  for (uint32_t cp = 0; cp < 0x80; ++cp) DSV4_CHECK(!drift[cp]);  // has_drift skips ASCII
  return drift;
}

const std::vector<bool>& drift_table() {
  static const std::vector<bool> table = compute_drift();
  return table;
}

}  // namespace

uint32_t next_code_point(std::string_view s, size_t& i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  const int n = b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
  uint32_t cp = b0 & (0x7F >> n);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

Gc category(uint32_t cp) {
  const auto it = std::upper_bound(kGcRuns.begin(), kGcRuns.end(), cp,
                                   [](uint32_t c, const GcRun& r) { return c < r.first; });
  return std::prev(it)->gc;
}

bool is_drift(uint32_t cp) { return drift_table()[cp]; }

bool has_drift(std::string_view text) {
  const std::vector<bool>& drift = drift_table();
  size_t i = 0;
  while (i < text.size()) {
    if (static_cast<uint8_t>(text[i]) < 0x80) {  // checked not to drift in compute_drift()
      ++i;
      continue;
    }
    if (drift[next_code_point(text, i)]) return true;
  }
  return false;
}

size_t drift_count() {
  const std::vector<bool>& drift = drift_table();
  size_t n = 0;
  for (bool d : drift) n += d;
  return n;
}

}  // namespace dsv4::unicode
