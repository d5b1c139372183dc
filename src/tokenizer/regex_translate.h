// Rewrites the Unicode classes of a tokenizer.json regex (Oniguruma syntax, as HF matches it) into
// explicit PCRE2 ranges from unicode_tables.h, so dsv4 splits text by the same Unicode version as
// HF however old the system PCRE2 is. Compiling and matching stay in pretokenizer.cpp.
#pragma once

#include <string>
#include <string_view>

namespace dsv4 {

// Two PCRE2 spellings of one Oniguruma pattern. In both, \s / \S become White_Space ranges and
// \uHHHH becomes \x{HHHH}. \p{X} / \P{X} / \p{^X} for a General_Category X (one- or two-letter
// short name, L& / LC, or the long names Letter, Mark, Number, Punctuation, Symbol, Separator,
// Other) become, in `exact`, explicit Unicode 16 code point ranges (slow to match: PCRE2 10.42's
// JIT tests ranges one by one) and, in `native`, PCRE2's own \p{Xx} per category (fast, but with
// PCRE2's Unicode version; unicode_drift.h says where the two differ). Other syntax passes
// through unchanged. Nested classes and && intersections (Oniguruma-only) throw dsv4::Error
// naming `field`.
struct TranslatedRegex {
  std::string exact;
  std::string native;
  bool uses_categories = false;  // any \p / \P was rewritten (else exact == native)
};
TranslatedRegex translate_regex(std::string_view pattern, const std::string& field);

}  // namespace dsv4
