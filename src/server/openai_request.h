// OpenAI request bodies (POST /v1/chat/completions, /v1/completions) read and validated into typed
// requests: every field is checked, and a field or value this server does not implement is a 400
// that names it (never ignored). Tokenizing, the context check and running are openai_service.cpp's.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "chat/encoder.h"
#include "chat/messages.h"
#include "engine/sampler.h"

namespace dsv4::server {

// Server-wide defaults a request may override (dsv4 serve's options).
struct RequestDefaults {
  chat::ThinkingMode thinking_mode = chat::ThinkingMode::kThinking;  // vLLM's default for V4
  chat::EncoderRevision revision = chat::EncoderRevision::kOriginal;
  std::string reasoning_effort;  // in the revision's own levels; "" = the revision's default
  float temperature = kDefaultTemperature;
};

// What both endpoints share.
struct GenerationRequest {
  std::string model;
  SamplingParams sampling;           // seed and top_logprobs filled in by the service
  std::optional<uint64_t> seed;      // absent: the service draws one
  std::optional<int64_t> max_tokens; // absent: the service's default, capped by the context
  std::vector<std::string> stop;     // stop strings (the output ends before the first)
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool stream = false;
  bool include_usage = false;        // stream_options.include_usage
  bool logprobs = false;             // each output token's log-probability ...
  int32_t top_logprobs = 0;          // ... and this many most likely alternatives
};

struct ChatRequest {
  GenerationRequest gen;
  std::vector<chat::Message> messages;  // request tools attached (encoding.md §3.1)
  chat::EncodeOptions encode;           // mode and effort resolved from the request and defaults
  bool tools = false;                   // tools offered (and tool_choice is not "none")
};

struct CompletionRequest {
  GenerationRequest gen;
  std::string prompt;               // raw text, tokenized as is (no BOS is added), or
  std::vector<int32_t> prompt_ids;  // token ids, when the prompt was a list of integers
  bool prompt_is_ids = false;
};

// Both throw ApiError (400) naming the field.
ChatRequest parse_chat_request(const chat::Json& body, const RequestDefaults& defaults);
CompletionRequest parse_completion_request(const chat::Json& body, const RequestDefaults& defaults);

// An API reasoning_effort ("minimal" ... "max", as the hosted API and vLLM accept them) in the
// encoder revision's own levels (encoding.md §1, §8): original {high, max}, 0731 {low, high, max}.
// "none" is not an effort (it selects chat mode) and, like unknown levels, is an ApiError here.
std::string encoder_effort(chat::EncoderRevision revision, const std::string& api_level,
                           const std::string& param);

}  // namespace dsv4::server
