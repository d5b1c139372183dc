// The code points where the system PCRE2's built-in General_Category data disagrees with
// unicode_tables.h (HF's Unicode 16): text without them may be split with PCRE2's fast native
// \p{..}; text with them needs the explicit ranges. The choice itself is made in pretokenizer.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tokenizer/unicode_tables.h"

namespace dsv4::unicode {

// True when `text` (valid UTF-8) contains a drifting code point. The table behind it is computed
// from PCRE2 on first use (some tens of milliseconds) and shared by the process.
bool has_drift(std::string_view text);

size_t drift_count();  // how many code points drift (reported by tests)
bool is_drift(uint32_t cp);

Gc category(uint32_t cp);  // Unicode 16 General_Category (kGcRuns), cp <= U+10FFFF

// Decodes the (valid) UTF-8 character at s[i] and advances i past it.
uint32_t next_code_point(std::string_view s, size_t& i);

}  // namespace dsv4::unicode
