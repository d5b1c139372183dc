// Stand-ins for drifting code points (see stand_ins.h). Which code points drift is
// unicode_drift.cpp's finding; running the patterns is pretokenizer.cpp's.
#include "tokenizer/stand_ins.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "tokenizer/unicode_drift.h"
#include "util/error.h"

namespace dsv4 {

namespace {

size_t utf8_length(uint32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

// Index into a stand-in row: UTF-8 lengths 2, 3, 4 (non-ASCII code points only).
size_t length_slot(uint32_t cp) { return cp < 0x800 ? 0 : cp < 0x10000 ? 1 : 2; }

void write_utf8(char* out, uint32_t cp) {
  const size_t n = utf8_length(cp);
  static constexpr uint8_t kLead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
  for (size_t k = n - 1; k > 0; --k) {
    out[k] = static_cast<char>(0x80 | (cp & 0x3F));
    cp >>= 6;
  }
  out[0] = static_cast<char>(kLead[n] | cp);
}

bool is_gc_name(std::string_view name) {
  static const char* const kName[unicode::kGcCount] = {
      "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
      "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"};
  if (name.size() == 1 && std::string_view("LMNPSZC").find(name[0]) != std::string_view::npos) return true;
  return std::find(std::begin(kName), std::end(kName), name) != std::end(kName);
}

// Reads one literal character of a PCRE2 pattern at p[i], advancing i: a UTF-8 character, an ASCII
// character, \x{H..}, \xHH, an escaped punctuation mark or \t \n \r \f \v \e \a. nullopt (i unmoved)
// for anything else.
std::optional<uint32_t> read_literal(std::string_view p, size_t& i) {
  const auto c = static_cast<uint8_t>(p[i]);
  if (c >= 0x80) return unicode::next_code_point(p, i);
  if (c != '\\') {
    ++i;
    return c;
  }
  if (i + 1 >= p.size()) return std::nullopt;
  const char d = p[i + 1];
  if (d == 'x') {
    size_t j = i + 2, end;
    std::string hex;
    if (j < p.size() && p[j] == '{') {
      end = p.find('}', j);
      if (end == std::string_view::npos) return std::nullopt;
      hex = std::string(p.substr(j + 1, end - j - 1));
      ++end;
    } else {
      end = j;
      while (end < p.size() && end < j + 2 && std::isxdigit(static_cast<unsigned char>(p[end]))) ++end;
      hex = std::string(p.substr(j, end - j));
    }
    if (hex.empty() || hex.size() > 6 || !std::all_of(hex.begin(), hex.end(), [](char h) {
          return std::isxdigit(static_cast<unsigned char>(h)) != 0;
        }))
      return std::nullopt;
    i = end;
    return static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
  }
  static const std::string_view kControls = "tnrfvea";
  if (std::ispunct(static_cast<unsigned char>(d)) || kControls.find(d) != std::string_view::npos) {
    i += 2;
    return d;  // the exact value does not matter: ASCII never drifts
  }
  return std::nullopt;
}

}  // namespace

bool DriftStandIns::scan_pattern(std::string_view p) {
  auto add = [&](uint32_t a, uint32_t b) {
    if (b >= 0x80) hull_.push_back({std::max<uint32_t>(a, 0x80), b});
  };
  bool in_class = false;
  size_t class_open = 0;
  size_t i = 0;
  while (i < p.size()) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size() && (p[i + 1] == 'p' || p[i + 1] == 'P')) {
      // Only the category classes regex_translate writes: \p{X} and \p{Xx}.
      const size_t close = p.find('}', i);
      if (i + 2 >= p.size() || p[i + 2] != '{' || close == std::string_view::npos ||
          !is_gc_name(p.substr(i + 3, close - i - 3)))
        return false;
      i = close + 1;
      continue;
    }
    if (!in_class) {
      if (c == '[') {
        in_class = true;
        ++i;
        if (i < p.size() && p[i] == '^') ++i;
        class_open = i;
        continue;
      }
      if (c == '(' && i + 2 < p.size() && p[i + 1] == '?' &&
          std::string_view("=!<:#>|").find(p[i + 2]) == std::string_view::npos)
        return false;  // inline options such as (?i) change how characters compare
      if (c == '.' || c == '|' || c == '(' || c == ')' || c == '*' || c == '+' || c == '?' ||
          c == '^' || c == '$') {
        ++i;
        continue;
      }
      if (c == '{') {  // a quantifier {n,m}
        const size_t close = p.find('}', i);
        if (close == std::string_view::npos) return false;
        i = close + 1;
        continue;
      }
      const auto cp = read_literal(p, i);
      if (!cp) return false;
      add(*cp, *cp);
      continue;
    }
    if (c == ']' && i > class_open) {
      in_class = false;
      ++i;
      continue;
    }
    if (c == '[') return false;  // POSIX classes and the like
    const auto lo = read_literal(p, i);
    if (!lo) return false;
    uint32_t hi = *lo;
    if (i + 1 < p.size() && p[i] == '-' && p[i + 1] != ']') {
      ++i;
      const auto end = read_literal(p, i);
      if (!end) return false;
      hi = *end;
    }
    add(*lo, hi);
  }
  return !in_class;
}

DriftStandIns::DriftStandIns(const std::vector<std::string>& native_patterns,
                             const std::vector<std::string>& literals) {
  for (const std::string& p : native_patterns)
    if (!scan_pattern(p)) enabled_ = false;
  for (const std::string& literal : literals) {
    size_t i = 0;
    while (i < literal.size()) {
      const uint32_t cp = unicode::next_code_point(literal, i);
      if (cp >= 0x80) hull_.push_back({cp, cp});
    }
  }
  if (!enabled_) return;
  // The lowest code point of each category and UTF-8 length that neither drifts nor is a literal,
  // found run by run (kGcRuns) so that the search usually stops at a run's first code point.
  const auto& runs = unicode::kGcRuns;
  for (size_t r = 0; r < runs.size(); ++r) {
    const uint32_t last = r + 1 < runs.size() ? runs[r + 1].first - 1 : 0x10FFFF;
    auto& slots = stand_in_[static_cast<int>(runs[r].gc)];
    for (uint32_t cp = std::max<uint32_t>(runs[r].first, 0x80); cp <= last; ++cp) {
      if (cp >= 0xD800 && cp <= 0xDFFF) break;  // the Cs run
      uint32_t& slot = slots[length_slot(cp)];
      if (slot != 0) {  // skip to the next UTF-8 length, if this run reaches it
        const uint32_t next_length_start = cp < 0x800 ? 0x800 : cp < 0x10000 ? 0x10000 : 0x110000;
        if (next_length_start > last) break;
        cp = next_length_start - 1;
        continue;
      }
      if (!unicode::is_drift(cp) && !in_hull(cp)) slot = cp;
    }
  }
}

bool DriftStandIns::in_hull(uint32_t cp) const {
  for (const auto& r : hull_)
    if (cp >= r.first && cp <= r.last) return true;
  return false;
}

DriftStandIns::Outcome DriftStandIns::substitute(std::string_view text, std::string& out) const {
  bool copied = false;
  size_t i = 0;
  while (i < text.size()) {
    if (static_cast<uint8_t>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t start = i;
    const uint32_t cp = unicode::next_code_point(text, i);
    if (!unicode::is_drift(cp)) continue;
    if (!enabled_ || in_hull(cp)) return Outcome::kNeedsExact;
    const uint32_t stand_in = stand_in_[static_cast<int>(unicode::category(cp))][length_slot(cp)];
    if (stand_in == 0) return Outcome::kNeedsExact;
    if (!copied) {
      out.assign(text);
      copied = true;
    }
    write_utf8(&out[start], stand_in);
  }
  return copied ? Outcome::kSubstituted : Outcome::kNoDrift;
}

}  // namespace dsv4
