// Oniguruma Unicode classes -> explicit PCRE2 ranges (see regex_translate.h). The category data
// is unicode_tables.cpp; compiling the result is pretokenizer.cpp.
#include "tokenizer/regex_translate.h"

#include <cctype>
#include <cstdint>
#include <optional>
#include <vector>

#include "tokenizer/unicode_tables.h"
#include "util/error.h"

namespace dsv4 {

namespace {

using unicode::Gc;
using unicode::Range;
using GcMask = uint32_t;  // bit i: Gc(i)

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr uint32_t kSurrogateFirst = 0xD800, kSurrogateLast = 0xDFFF;  // not characters in UTF mode

constexpr GcMask bit(Gc g) { return GcMask{1} << static_cast<int>(g); }
constexpr GcMask bits(std::initializer_list<Gc> gs) {
  GcMask m = 0;
  for (Gc g : gs) m |= bit(g);
  return m;
}

std::optional<GcMask> category_mask(std::string_view raw_name) {
  // Oniguruma compares property names ignoring case, spaces, '_' and '-'.
  std::string name;
  for (char c : raw_name)
    if (c != ' ' && c != '_' && c != '-') name += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const char* const kShort[unicode::kGcCount] = {
      "lu", "ll", "lt", "lm", "lo", "mn", "mc", "me", "nd", "nl", "no", "pc", "pd", "ps", "pe",
      "pi", "pf", "po", "sm", "sc", "sk", "so", "zs", "zl", "zp", "cc", "cf", "cs", "co", "cn"};
  for (int i = 0; i < unicode::kGcCount; ++i)
    if (name == kShort[i]) return GcMask{1} << i;
  if (name == "l&" || name == "lc") return bits({Gc::Lu, Gc::Ll, Gc::Lt});
  struct Major {
    const char* letter;
    const char* long_name;
    GcMask mask;
  };
  static const Major kMajor[] = {
      {"l", "letter", bits({Gc::Lu, Gc::Ll, Gc::Lt, Gc::Lm, Gc::Lo})},
      {"m", "mark", bits({Gc::Mn, Gc::Mc, Gc::Me})},
      {"n", "number", bits({Gc::Nd, Gc::Nl, Gc::No})},
      {"p", "punctuation", bits({Gc::Pc, Gc::Pd, Gc::Ps, Gc::Pe, Gc::Pi, Gc::Pf, Gc::Po})},
      {"s", "symbol", bits({Gc::Sm, Gc::Sc, Gc::Sk, Gc::So})},
      {"z", "separator", bits({Gc::Zs, Gc::Zl, Gc::Zp})},
      {"c", "other", bits({Gc::Cc, Gc::Cf, Gc::Cs, Gc::Co, Gc::Cn})},
  };
  for (const Major& m : kMajor)
    if (name == m.letter || name == m.long_name) return m.mask;
  return std::nullopt;
}

std::vector<Range> ranges_of(GcMask mask) {
  std::vector<Range> out;
  const auto& runs = unicode::kGcRuns;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (!(mask & bit(runs[i].gc))) continue;
    const uint32_t last = i + 1 < runs.size() ? runs[i + 1].first - 1 : kMaxCodePoint;
    if (!out.empty() && out.back().last + 1 == runs[i].first)
      out.back().last = last;
    else
      out.push_back({runs[i].first, last});
  }
  return out;
}

std::vector<Range> complement(const std::vector<Range>& in) {
  std::vector<Range> out;
  uint32_t next = 0;
  for (const Range& r : in) {
    if (r.first > next) out.push_back({next, r.first - 1});
    next = r.last + 1;
  }
  if (next <= kMaxCodePoint) out.push_back({next, kMaxCodePoint});
  return out;
}

// Class members for PCRE2, without the surrounding brackets; surrogates are left out.
std::string class_body(const std::vector<Range>& ranges) {
  std::string out;
  auto emit = [&](uint32_t a, uint32_t b) {
    if (a > b) return;
    out += cat("\\x{", std::hex, a, "}");
    if (b > a) out += cat("-\\x{", std::hex, b, "}");
  };
  for (const Range& r : ranges) {
    if (r.last < kSurrogateFirst || r.first > kSurrogateLast) {
      emit(r.first, r.last);
    } else {
      if (r.first < kSurrogateFirst) emit(r.first, kSurrogateFirst - 1);
      if (r.last > kSurrogateLast) emit(kSurrogateLast + 1, r.last);
    }
  }
  return out;
}

// PCRE2's own spelling of a category set: \p{L} etc. for whole major classes (one table lookup
// each when matching), \p{Xx} for the remaining single categories.
std::string native_body(GcMask mask) {
  static const char* const kName[unicode::kGcCount] = {
      "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
      "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"};
  std::string out;
  for (const char* major : {"L", "M", "N", "P", "S", "Z", "C"}) {
    const GcMask m = *category_mask(major);
    if ((mask & m) == m) {
      out += cat("\\p{", major, "}");
      mask &= ~m;
    }
  }
  for (int i = 0; i < unicode::kGcCount; ++i)
    if (mask & (GcMask{1} << i)) out += cat("\\p{", kName[i], "}");
  return out;
}

constexpr GcMask kAllCategories = (GcMask{1} << unicode::kGcCount) - 1;

bool is_hex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

}  // namespace

TranslatedRegex translate_regex(std::string_view p, const std::string& field) {
  TranslatedRegex out;
  auto both = [&](std::string_view text) {
    out.exact += text;
    out.native += text;
  };
  bool in_class = false;
  size_t class_open = 0;  // index in `p` just after the '[' (and '^') that opened the class
  auto bad = [&](size_t at, const char* what) {
    fail("field '", field, "': regex offset ", at, ": ", what);
  };
  auto bracket = [&](const std::string& body) { return in_class ? body : "[" + body + "]"; };
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\') {
      if (i + 1 == p.size()) bad(i, "trailing backslash");
      const char d = p[i + 1];
      size_t end = i + 2;  // one past the escape
      if (d == 'p' || d == 'P') {
        std::string_view name;
        if (end < p.size() && p[end] == '{') {
          const size_t close = p.find('}', end);
          if (close == std::string_view::npos) bad(i, "unterminated \\p{");
          name = p.substr(end + 1, close - end - 1);
          end = close + 1;
        } else if (end < p.size()) {
          name = p.substr(end, 1);
          end += 1;
        }
        bool negate = d == 'P';
        if (!name.empty() && name[0] == '^') {
          negate = !negate;
          name.remove_prefix(1);
        }
        if (auto mask = category_mask(name)) {
          // Categories partition the code points, so a negation is the other categories.
          const GcMask m = negate ? kAllCategories & ~*mask : *mask;
          out.exact += bracket(class_body(ranges_of(m)));
          out.native += bracket(native_body(m));
          out.uses_categories = true;
        } else {
          both(p.substr(i, end - i));  // scripts and other properties: PCRE2's own tables
        }
      } else if (d == 's' || d == 'S') {
        const std::vector<Range> ranges(unicode::kWhiteSpace.begin(), unicode::kWhiteSpace.end());
        if (d == 's')
          both(bracket(class_body(ranges)));
        else if (in_class)
          both(class_body(complement(ranges)));
        else  // a negated class keeps the literal ranges few (stand_ins.h avoids them)
          both("[^" + class_body(ranges) + "]");
      } else if (d == 'u' && i + 6 <= p.size() && is_hex(p[i + 2]) && is_hex(p[i + 3]) &&
                 is_hex(p[i + 4]) && is_hex(p[i + 5])) {
        both(cat("\\x{", p.substr(i + 2, 4), "}"));
        end = i + 6;
      } else {
        both(p.substr(i, 2));  // any other escape is PCRE2's (\x{..}, \d, \r, ...)
      }
      i = end - 1;
      continue;
    }
    if (in_class) {
      if (c == '[') {
        if (i + 1 < p.size() && p[i + 1] == ':') {  // POSIX [:alpha:], same in both engines
          const size_t close = p.find(":]", i + 2);
          if (close == std::string_view::npos) bad(i, "unterminated [:class:]");
          both(p.substr(i, close + 2 - i));
          i = close + 1;
          continue;
        }
        bad(i, "nested character classes are Oniguruma-only and not supported");
      }
      if (c == '&' && i + 1 < p.size() && p[i + 1] == '&') bad(i, "class intersection (&&) is not supported");
      if (c == ']' && i > class_open) in_class = false;  // a ']' right after '[' or '[^' is literal
    } else if (c == '[') {
      in_class = true;
      class_open = i + 1;
      if (class_open < p.size() && p[class_open] == '^') {
        both("[^");
        ++i;
        ++class_open;
        continue;
      }
    }
    both(std::string_view(&p[i], 1));
  }
  if (in_class) bad(p.size(), "unterminated character class");
  return out;
}

}  // namespace dsv4
