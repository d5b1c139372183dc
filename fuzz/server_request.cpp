// libFuzzer target for the OpenAI request parser (src/server/openai_request.cpp) and what the chat
// endpoint does next with a parsed request (the prompt encoder): arbitrary bodies may be refused
// with ApiError (or the encoder's dsv4::Error, also a 400), never with anything else, and an
// accepted request always carries a model name and sampling parameters the sampler accepts.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "chat/encoder.h"
#include "chat/py_json.h"
#include "engine/sampler.h"
#include "server/api_error.h"
#include "server/openai_request.h"
#include "util/error.h"
#include "util/json_limits.h"

using namespace dsv4;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  server::RequestDefaults defaults;
  defaults.thinking_mode = (data[0] & 1) ? chat::ThinkingMode::kThinking : chat::ThinkingMode::kChat;
  defaults.revision = (data[0] & 2) ? chat::EncoderRevision::k0731 : chat::EncoderRevision::kOriginal;
  const bool chat_endpoint = (data[0] & 4) != 0;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);

  chat::Json json;
  try {
    check_json_nesting(body, 64, "body");  // as the service does before parsing
    json = chat::parse_json(body, "body");
  } catch (const Error&) {
    return 0;
  }
  try {
    if (chat_endpoint) {
      const server::ChatRequest r = server::parse_chat_request(json, defaults);
      if (r.gen.model.empty() || r.messages.empty()) std::abort();
      validate(r.gen.sampling);  // throws (and so aborts below) if the parser let a bad value by
      try {
        chat::encode_messages(r.messages, r.encode);
      } catch (const Error&) {
      }
    } else {
      const server::CompletionRequest r = server::parse_completion_request(json, defaults);
      if (r.gen.model.empty() || (r.prompt_is_ids ? r.prompt_ids.empty() : r.prompt.empty())) std::abort();
      validate(r.gen.sampling);
    }
  } catch (const server::ApiError& e) {
    if (e.status() != 400) std::abort();
  }
  return 0;
}
