// libFuzzer target for the completion parser (src/chat/parser.cpp): arbitrary output text, fed in
// arbitrary pieces, in both modes and both policies. Strict may reject (dsv4::Error); lenient must
// never throw, and on UTF-8 input must always produce tool-call arguments that are valid JSON.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "chat/parser.h"
#include "chat/py_json.h"
#include "util/error.h"
#include "util/utf8.h"

using namespace dsv4::chat;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const ThinkingMode mode = (data[0] & 1) ? ThinkingMode::kThinking : ThinkingMode::kChat;
  const ParsePolicy policy = (data[0] & 2) ? ParsePolicy::kLenient : ParsePolicy::kStrict;
  const size_t piece = 1 + data[1] % 16;  // streamed piece length
  const std::string_view text(reinterpret_cast<const char*>(data + 2), size - 2);

  CompletionParser parser(mode, policy);
  try {
    for (size_t i = 0; i < text.size(); i += piece) parser.push(text.substr(i, piece));
    if (data[0] & 4) parser.push_eos();
    parser.finish();
  } catch (const dsv4::Error&) {
    if (policy == ParsePolicy::kLenient) std::abort();  // lenient promised never to throw
    return 0;
  }
  if (policy == ParsePolicy::kLenient && dsv4::utf8::is_valid(text)) {
    for (const ToolCall& call : parser.result().tool_calls)
      if (!Json::accept(call.arguments)) std::abort();
  }
  return 0;
}
