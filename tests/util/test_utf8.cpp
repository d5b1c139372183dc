// util/utf8: the hand-picked ill-formed sequences of Unicode §3.9, every scalar value encoded
// and read back, and random byte strings judged against an independent decoder (bit arithmetic
// with the overlong / surrogate / range rules, not Table 3-7's per-lead-byte ranges).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include "support/seed.h"
#include "util/utf8.h"

namespace dsv4 {
namespace {

// Well-formedness by decoding: a lead byte gives the length and the first bits, continuation
// bytes the rest; then no overlong form, no surrogate, nothing past U+10FFFF.
bool reference_is_valid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1Fu;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0Fu;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07u;
    else return false;
    if (i + size_t(len) > s.size()) return false;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + size_t(k)]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    static constexpr uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += size_t(len);
  }
  return true;
}

TEST(Utf8, ValidAndIllFormed) {
  EXPECT_TRUE(utf8::is_valid(""));
  EXPECT_TRUE(utf8::is_valid("a é 中 \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF"));
  for (const char* bad : {"\x80", "\xC0\xAF", "\xC1\xBF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF0\x80\x80\xAF",
                          "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", "\xC3", "\xE4\xB8", "\xFF"}) {
    EXPECT_FALSE(utf8::is_valid(bad)) << testing::PrintToString(std::string(bad));
    EXPECT_FALSE(reference_is_valid(bad)) << testing::PrintToString(std::string(bad));
  }
}

// Every scalar value: one well-formed character of the expected length that decodes back to it,
// in code point order (UTF-8 sorts bytewise as the code points do); a surrogate's 3-byte form is
// rejected; past U+10FFFF is an error.
TEST(Utf8, AppendEncodesEveryScalarValue) {
  std::string previous;
  for (char32_t cp = 0; cp < 0x110000; ++cp) {
    std::string s;
    utf8::append(s, cp);
    const size_t want = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    ASSERT_EQ(s.size(), want) << uint32_t(cp);
    if (cp >= 0xD800 && cp <= 0xDFFF) {
      ASSERT_FALSE(utf8::is_valid(s)) << uint32_t(cp);
      continue;
    }
    ASSERT_TRUE(utf8::is_valid(s)) << uint32_t(cp);
    const utf8::Step st = utf8::step(s);
    ASSERT_TRUE(st.kind == utf8::StepKind::kChar && st.length == want) << uint32_t(cp);
    uint32_t back = want == 1 ? uint32_t(uint8_t(s[0])) : uint32_t(uint8_t(s[0])) & (0x7Fu >> want);
    for (size_t k = 1; k < want; ++k) back = (back << 6) | (uint32_t(uint8_t(s[k])) & 0x3Fu);
    ASSERT_EQ(back, uint32_t(cp));
    ASSERT_LT(previous, s) << uint32_t(cp);
    previous = s;
  }
  std::string s;
  EXPECT_ANY_THROW(utf8::append(s, char32_t(0x110000)));
}

// Random byte strings, biased towards lead and continuation bytes so that long characters and
// near misses occur often: is_valid agrees with the reference decoder, and repair() is valid.
TEST(Utf8, RandomBytesAgreeWithReferenceDecoder) {
  std::mt19937_64 rng(test::seed_for_this_test());
  const uint8_t kInteresting[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2,
                                  0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF};
  int valid = 0;
  for (int iter = 0; iter < 200000; ++iter) {
    std::string s(size_t(rng() % 9), '\0');
    for (char& c : s)
      c = char(rng() % 2 ? kInteresting[rng() % sizeof kInteresting] : uint8_t(0x80 + rng() % 0x40));
    const bool want = reference_is_valid(s);
    ASSERT_EQ(utf8::is_valid(s), want) << testing::PrintToString(s);
    ASSERT_TRUE(utf8::is_valid(utf8::repair(s))) << testing::PrintToString(s);
    valid += want;
  }
  EXPECT_GT(valid, 1000) << "the generator should make well-formed strings too";
}

}  // namespace
}  // namespace dsv4
