// OpenAI response objects built from a request's generated text and tokens: chat.completion
// (message with reasoning_content / content / tool_calls, split by the completion parser) and
// text_completion, whole or as stream chunks, with logprobs, finish_reason and usage. Feeding it
// (scheduler, HTTP, SSE framing) is openai_service.cpp's job.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chat/parser.h"
#include "engine/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace dsv4::server {

using chat::Json;

struct ResponseMeta {
  std::string id;        // "chatcmpl-..." or "cmpl-..."
  int64_t created = 0;   // Unix seconds
  std::string model;     // the served model name
};

struct LogprobRequest {
  bool enabled = false;  // each output token's log-probability
  int32_t top = 0;       // and this many most likely alternatives
};

// OpenAI's finish_reason: "stop" (EOS, a stop id or stop string), "tool_calls" (a stop after
// tool calls), "length". Cancelled and failed requests never get one (the service answers them
// with an error).
const char* finish_reason(FinishReason r, bool has_tool_calls);

Json usage_json(const RequestOutcome& o);

// "data: <json>\n\n", and the stream's last event.
std::string sse_event(const Json& j);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// JSON text of a response: invalid UTF-8 (e.g. a token's partial character) becomes U+FFFD.
std::string dump_json(const Json& j);

// chat.completion / chat.completion.chunk. Feed it every piece of output text in order with the
// tokens behind it (stop tokens excluded), then finish(); streaming collects the chunks on the
// way, non-streaming asks for response() at the end.
class ChatResponseBuilder {
 public:
  ChatResponseBuilder(ResponseMeta meta, chat::ThinkingMode mode, const Tokenizer& tokenizer,
                      LogprobRequest logprobs, bool streaming,
                      std::function<std::string()> new_tool_call_id);

  Json role_chunk() const;  // the first chunk: delta {role: "assistant", content: ""}
  // Chunks for new text (empty while the parser holds back a possible marker, or when not
  // streaming).
  std::vector<Json> push(std::string_view text, std::span<const SampleResult> tokens);
  // The request ended (not cancelled or failed): the last deltas and the finish_reason chunk;
  // with include_usage, a final chunk with empty choices and the usage (OpenAI's shape), else the
  // usage rides on the finish_reason chunk.
  std::vector<Json> finish(const RequestOutcome& o, bool include_usage);
  Json response(const RequestOutcome& o) const;  // the whole chat.completion (after finish)

  // The parser's account (its lenient repairs in `issues`); the message sent is content() etc.
  const chat::ParsedCompletion& parsed() const { return parser_.result(); }
  const std::string& content() const { return content_; }
  const std::string& reasoning() const { return reasoning_; }

 private:
  Json chunk(Json delta, const char* finish) const;
  // `final`: the parser's last flush (a trailing marker prefix is dropped; pending logprobs go).
  void add_delta(std::vector<Json>& out, chat::ParseDelta d, bool final);

  ResponseMeta meta_;
  const Tokenizer& tokenizer_;
  LogprobRequest logprobs_;
  bool streaming_;
  std::function<std::string()> new_tool_call_id_;
  chat::CompletionParser parser_;
  std::string reasoning_, content_;           // what was sent (stray DSML stripped)
  bool reasoning_cut_ = false, content_cut_ = false;
  std::vector<chat::ToolCall> tool_calls_;   // with ids
  Json all_logprobs_ = Json::array();        // non-streaming: every token's entry
  Json pending_logprobs_ = Json::array();    // streaming: entries not yet sent
};

// text_completion (POST /v1/completions): the raw continuation, no parsing.
class CompletionResponseBuilder {
 public:
  CompletionResponseBuilder(ResponseMeta meta, const Tokenizer& tokenizer, LogprobRequest logprobs,
                            bool streaming);

  std::vector<Json> push(std::string_view text, std::span<const SampleResult> tokens);
  std::vector<Json> finish(const RequestOutcome& o, bool include_usage);
  Json response(const RequestOutcome& o);  // the whole text_completion (after finish)
  const std::string& text() const { return text_; }

 private:
  Json chunk(std::string text, Json logprobs, const char* finish) const;
  Json take_logprobs(bool all);

  ResponseMeta meta_;
  const Tokenizer& tokenizer_;
  LogprobRequest logprobs_;
  bool streaming_;
  std::string text_;
  std::vector<SampleResult> tokens_;  // every output token so far
  size_t tokens_sent_ = 0;           // streaming: tokens whose logprobs went out
  int64_t token_offset_ = 0;          // byte offset of the next unsent token in the output
};

}  // namespace dsv4::server
