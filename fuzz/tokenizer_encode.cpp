// libFuzzer target: encode arbitrary bytes with the embedded nano tokenizer (the V4 pre-tokenizer
// regexes, added tokens, BPE) and check decode(encode(x)) == the lossy UTF-8 reading of x, and that
// the streaming decoder adds up to decode().
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "tokenizer/tokenizer.h"
#include "util/utf8.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const dsv4::Tokenizer tok =
      dsv4::Tokenizer::load(std::filesystem::path(DSV4_SOURCE_DIR) / "models/nano/tokenizer.json");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto ids = tok.encode(text);
  const std::string decoded = tok.decode(ids);
  if (decoded != dsv4::utf8::repair(text)) __builtin_trap();
  dsv4::StreamDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.finish();
  if (streamed != decoded) __builtin_trap();
  return 0;
}
