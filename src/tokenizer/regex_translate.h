// Rewrites the Unicode classes of a tokenizer.json regex (Oniguruma syntax, as HF matches it) into
// explicit PCRE2 ranges from unicode_tables.h, so dsv4 splits text by the same Unicode version as
// HF however old the system PCRE2 is. Compiling and matching stay in pretokenizer.cpp.
#pragma once

#include <string>
#include <string_view>

namespace dsv4 {

// \p{X} / \P{X} / \p{^X} for a General_Category X (one- or two-letter short name, L& / LC, or the
// long names Letter, Mark, Number, Punctuation, Symbol, Separator, Other), and \s / \S (White_Space),
// inside or outside brackets, become explicit code point ranges; \uHHHH becomes \x{HHHH}. Other
// syntax passes through to PCRE2 unchanged. Nested classes and && intersections (Oniguruma-only)
// throw dsv4::Error naming `field`.
std::string translate_regex(std::string_view pattern, const std::string& field);

}  // namespace dsv4
