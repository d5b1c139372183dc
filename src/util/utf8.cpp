// UTF-8 well-formedness, lossy repair and encoding (see utf8.h). Which bytes a token stands for
// is decided in tokenizer/byte_level.cpp; this file only judges and writes byte sequences.
#include "util/utf8.h"

#include <cstdint>

#include "util/error.h"

namespace dsv4::utf8 {

namespace {

// Unicode Table 3-7: the allowed range of the second byte depends on the lead byte; every later
// continuation byte is 80..BF.
struct LeadInfo {
  uint8_t length;  // 0: not a lead byte
  uint8_t second_lo, second_hi;
};

LeadInfo lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};  // excludes the surrogates D800..DFFF
  if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};  // nothing above U+10FFFF
  return {0, 0, 0};                        // 80..C1, F5..FF
}

}  // namespace

Step step(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const LeadInfo info = lead_info(p[0]);
  if (info.length == 0) return {StepKind::kInvalid, 1};
  if (info.length == 1) return {StepKind::kChar, 1};
  for (size_t i = 1; i < info.length; ++i) {
    if (i == s.size()) return {StepKind::kTruncated, i};
    const uint8_t lo = i == 1 ? info.second_lo : 0x80;
    const uint8_t hi = i == 1 ? info.second_hi : 0xBF;
    if (p[i] < lo || p[i] > hi) return {StepKind::kInvalid, i};
  }
  return {StepKind::kChar, info.length};
}

size_t valid_prefix_length(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {  // ASCII fast path
      ++i;
      continue;
    }
    const Step st = step(s.substr(i));
    if (st.kind != StepKind::kChar) return i;
    i += st.length;
  }
  return i;
}

std::string repair(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  size_t i = 0;
  while (i < s.size()) {
    const size_t good = valid_prefix_length(s.substr(i));
    out.append(s.substr(i, good));
    i += good;
    if (i == s.size()) break;
    out.append(kReplacement);
    i += step(s.substr(i)).length;
  }
  return out;
}

void append(std::string& out, char32_t cp) {
  DSV4_CHECK_MSG(cp < 0x110000, "utf8::append: code point ", uint32_t(cp), " is past U+10FFFF");
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace dsv4::utf8
