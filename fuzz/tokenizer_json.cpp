// libFuzzer target: tokenizer.json loading and validation (tokenizer/tokenizer_json.cpp and the
// tables built from it); for a file it accepts, encode and decode must work. Only dsv4::Error may
// come out.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/utf8.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto tok = dsv4::Tokenizer::from_json(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.json");
    const std::string text = "Hello, 世界 123 <think>\n\t x\xFF";
    const auto ids = tok.encode(text);
    // Byte-level BPE reproduces every byte, unless added tokens (whose content decodes through the
    // byte alphabet) change the text: only well-formedness is universal.
    const std::string back = tok.decode(ids);
    if (dsv4::utf8::valid_prefix_length(back) != back.size()) __builtin_trap();
  } catch (const dsv4::Error&) {
  }
  return 0;
}
