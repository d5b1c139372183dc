// UTF-8 well-formedness (Unicode §3.9, Table 3-7), lossy repair by "maximal subparts" (the rule
// Rust's from_utf8_lossy and Python's "replace" share) and encoding one code point. The one place
// this engine judges UTF-8: prompts, chat messages, server requests and the tokenizer's output.
// Byte-level token mapping is tokenizer/byte_level.h.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dsv4::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

enum class StepKind {
  kChar,       // a well-formed character of `length` bytes
  kTruncated,  // the whole rest of the input (`length` bytes) is a proper prefix of a character
  kInvalid,    // `length` bytes (a maximal subpart, >= 1) that no character starts with
};
struct Step {
  StepKind kind;
  size_t length;
};

// Classifies the bytes at the start of `s` (non-empty).
Step step(std::string_view s);

// Index of the first byte that is not part of a well-formed character (s.size() when valid).
size_t valid_prefix_length(std::string_view s);

inline bool is_valid(std::string_view s) { return valid_prefix_length(s) == s.size(); }

// `s` with each maximal ill-formed subsequence (and a truncated tail) replaced by U+FFFD.
std::string repair(std::string_view s);

// Appends the 1–4 byte encoding of code point cp (< 0x110000). A surrogate (D800–DFFF) comes out
// as its 3-byte form, which is_valid rejects: callers that want valid text skip them.
void append(std::string& out, char32_t cp);

}  // namespace dsv4::utf8
