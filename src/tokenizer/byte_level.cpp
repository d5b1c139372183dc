// The GPT-2 byte <-> unicode alphabet (see byte_level.h). Whether a byte string is well-formed
// UTF-8 is utf8.cpp's business.
#include "tokenizer/byte_level.h"

#include <cstdint>

#include "util/utf8.h"

namespace dsv4::byte_level {

namespace {

// Bytes that are printable Latin-1 characters keep their own code point; the other 68 (controls,
// space, DEL, NBSP..., soft hyphen) are numbered in byte order from U+0100.
constexpr bool keeps_code_point(int b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}
constexpr uint32_t kShiftedBase = 0x100;

struct Tables {
  std::array<std::string, 256> byte_to_char;
  std::array<int16_t, 0x200> code_point_to_byte;  // -1: not in the alphabet; all are < U+0200
};

std::string encode_code_point(uint32_t cp) {  // cp < 0x800 here
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

const Tables& tables() {
  static const Tables t = [] {
    Tables t;
    t.code_point_to_byte.fill(-1);
    uint32_t next_shifted = kShiftedBase;
    for (int b = 0; b < 256; ++b) {
      const uint32_t cp = keeps_code_point(b) ? static_cast<uint32_t>(b) : next_shifted++;
      t.byte_to_char[b] = encode_code_point(cp);
      t.code_point_to_byte[cp] = static_cast<int16_t>(b);
    }
    return t;
  }();
  return t;
}

}  // namespace

const std::array<std::string, 256>& byte_to_char() { return tables().byte_to_char; }

std::optional<std::string> chars_to_bytes(std::string_view token) {
  const Tables& t = tables();
  std::string out;
  out.reserve(token.size());
  size_t i = 0;
  while (i < token.size()) {
    const utf8::Step st = utf8::step(token.substr(i));
    if (st.kind != utf8::StepKind::kChar || st.length > 2) return std::nullopt;
    const auto b0 = static_cast<uint8_t>(token[i]);
    const uint32_t cp =
        st.length == 1 ? b0 : ((b0 & 0x1Fu) << 6) | (static_cast<uint8_t>(token[i + 1]) & 0x3Fu);
    if (cp >= t.code_point_to_byte.size() || t.code_point_to_byte[cp] < 0) return std::nullopt;
    out.push_back(static_cast<char>(t.code_point_to_byte[cp]));
    i += st.length;
  }
  return out;
}

std::string token_to_bytes(std::string_view token) {
  if (auto bytes = chars_to_bytes(token)) return std::move(*bytes);
  return std::string(token);
}

}  // namespace dsv4::byte_level
