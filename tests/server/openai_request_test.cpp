// OpenAI request parsing: every parameter we take lands in the typed request, every one we do not
// implement is a 400 naming it (its neutral value excepted), bad values name their field, and the
// thinking mode / effort / tools resolve the way vLLM and SGLang take them for DeepSeek-V4.
#include <gtest/gtest.h>

#include "server/api_error.h"
#include "server/openai_request.h"

namespace dsv4::server {
namespace {

using chat::Json;

Json chat_body(Json extra = Json::object()) {
  Json b = {{"model", "m"}, {"messages", Json::array({{{"role", "user"}, {"content", "hi"}}})}};
  for (auto& [k, v] : extra.items()) b[k] = v;
  return b;
}

Json completion_body(Json extra = Json::object()) {
  Json b = {{"model", "m"}, {"prompt", "In the beginning"}};
  for (auto& [k, v] : extra.items()) b[k] = v;
  return b;
}

// The ApiError a parse throws (status 0 when it does not throw).
ApiError chat_error(const Json& body, const RequestDefaults& d = {}) {
  try {
    parse_chat_request(body, d);
  } catch (const ApiError& e) {
    return e;
  }
  return ApiError(0, "no error");
}

ApiError completion_error(const Json& body) {
  try {
    parse_completion_request(body, {});
  } catch (const ApiError& e) {
    return e;
  }
  return ApiError(0, "no error");
}

TEST(OpenAiRequest, ChatFieldsLandInTheRequest) {
  const ChatRequest r = parse_chat_request(
      chat_body({{"max_completion_tokens", 7}, {"temperature", 0.0}, {"top_p", 0.5}, {"top_k", 3},
                 {"min_p", 0.1}, {"seed", 42}, {"stop", {"a", "bc"}}, {"logprobs", true}, {"top_logprobs", 2},
                 {"stream", true}, {"stream_options", {{"include_usage", true}}}, {"ignore_eos", true},
                 {"stop_token_ids", {5}}, {"user", "u1"}}),
      {});
  EXPECT_EQ(r.gen.model, "m");
  EXPECT_EQ(*r.gen.max_tokens, 7);
  EXPECT_EQ(r.gen.sampling.temperature, 0.0f);
  EXPECT_EQ(r.gen.sampling.top_p, 0.5f);
  EXPECT_EQ(r.gen.sampling.top_k, 3);
  EXPECT_FLOAT_EQ(r.gen.sampling.min_p, 0.1f);
  EXPECT_EQ(*r.gen.seed, 42u);
  EXPECT_EQ(r.gen.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_TRUE(r.gen.logprobs);
  EXPECT_EQ(r.gen.top_logprobs, 2);
  EXPECT_TRUE(r.gen.stream);
  EXPECT_TRUE(r.gen.include_usage);
  EXPECT_TRUE(r.gen.ignore_eos);
  EXPECT_EQ(r.gen.stop_token_ids, std::vector<int32_t>{5});
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].content, "hi");
}

TEST(OpenAiRequest, DefaultsApplyAndNullMeansAbsent) {
  RequestDefaults d;
  d.temperature = 0.25f;
  d.thinking_mode = chat::ThinkingMode::kChat;
  const ChatRequest r = parse_chat_request(chat_body({{"temperature", nullptr}, {"max_tokens", nullptr},
                                                      {"tools", nullptr}, {"stop", nullptr}}),
                                           d);
  EXPECT_EQ(r.gen.sampling.temperature, 0.25f);
  EXPECT_FALSE(r.gen.max_tokens.has_value());
  EXPECT_FALSE(r.gen.seed.has_value());
  EXPECT_EQ(r.encode.mode, chat::ThinkingMode::kChat);
  EXPECT_FALSE(r.tools);
}

TEST(OpenAiRequest, UnsupportedParametersAreNamed) {
  const std::vector<std::pair<Json, std::string>> cases = {
      {{{"frobnicate", 1}}, "frobnicate"},
      {{{"n", 2}}, "n"},
      {{{"presence_penalty", 0.5}}, "presence_penalty"},
      {{{"frequency_penalty", -1}}, "frequency_penalty"},
      {{{"repetition_penalty", 1.1}}, "repetition_penalty"},
      {{{"logit_bias", {{"5", 10}}}}, "logit_bias"},
      {{{"tool_choice", "required"}}, "tool_choice"},
      {{{"tool_choice", {{"type", "function"}, {"function", {{"name", "f"}}}}}}, "tool_choice"},
      {{{"parallel_tool_calls", false}}, "parallel_tool_calls"},
      {{{"response_format", {{"type", "json_object"}}}}, "response_format"},
      {{{"stream_options", {{"chunk_size", 3}}}}, "stream_options.chunk_size"},
      {{{"stream_options", {{"continuous_usage_stats", true}}}}, "stream_options.continuous_usage_stats"},
      {{{"chat_template_kwargs", {{"custom", 1}}}}, "chat_template_kwargs.custom"},
      {{{"thinking", {{"type", "enabled"}, {"budget_tokens", 100}}}}, "thinking.budget_tokens"},
      {{{"service_tier", "flex"}}, "service_tier"},
  };
  for (const auto& [extra, param] : cases) {
    const ApiError e = chat_error(chat_body(extra));
    EXPECT_EQ(e.status(), 400) << extra.dump();
    EXPECT_EQ(e.param(), param) << extra.dump();
    EXPECT_EQ(e.code(), "unsupported_parameter") << extra.dump();
    EXPECT_NE(std::string(e.what()).find(param.substr(0, param.find('.'))), std::string::npos) << e.what();
  }
  for (const auto& [extra, param] : std::vector<std::pair<Json, std::string>>{
           {{{"echo", true}}, "echo"}, {{{"suffix", "x"}}, "suffix"}, {{{"best_of", 3}}, "best_of"},
           {{{"prompt", {"a", "b"}}}, "prompt"}, {{{"messages", Json::array()}}, "messages"}}) {
    const ApiError e = completion_error(completion_body(extra));
    EXPECT_EQ(e.status(), 400) << extra.dump();
    EXPECT_EQ(e.param(), param) << extra.dump();
  }
}

TEST(OpenAiRequest, NeutralValuesOfUnimplementedParametersAreAccepted) {
  EXPECT_NO_THROW(parse_chat_request(
      chat_body({{"n", 1}, {"presence_penalty", 0}, {"frequency_penalty", 0.0}, {"repetition_penalty", 1.0},
                 {"logit_bias", Json::object()}, {"parallel_tool_calls", true},
                 {"response_format", {{"type", "text"}}}, {"tool_choice", "auto"},
                 {"stream_options", {{"continuous_usage_stats", false}}}}),
      {}));
  EXPECT_NO_THROW(parse_completion_request(completion_body({{"echo", false}, {"suffix", ""}, {"best_of", 1}}), {}));
  // The most stop strings a request may carry.
  EXPECT_EQ(parse_chat_request(chat_body({{"stop", Json(std::vector<std::string>(16, "s"))}}), {}).gen.stop.size(), 16u);
}

TEST(OpenAiRequest, BadValuesNameTheirField) {
  const std::vector<std::pair<Json, std::string>> cases = {
      {{{"temperature", "hot"}}, "temperature"},
      {{{"temperature", -0.1}}, "temperature"},
      {{{"top_p", 0}}, "top_p"},
      {{{"top_p", 1.5}}, "top_p"},
      {{{"top_k", -2}}, "top_k"},
      {{{"min_p", 1.0}}, "min_p"},
      {{{"max_tokens", 0}}, "max_tokens"},
      {{{"max_tokens", 2.5}}, "max_tokens"},
      {{{"max_tokens", 5}, {"max_completion_tokens", 6}}, "max_completion_tokens"},
      {{{"seed", "x"}}, "seed"},
      {{{"stop", ""}}, "stop"},
      {{{"stop", {"a", 3}}}, "stop[1]"},
      {{{"stop", {"a", ""}}}, "stop"},
      {{{"stop", Json(std::vector<std::string>(17, "s"))}}, "stop"},  // 16 at most
      {{{"stop_token_ids", {int64_t(INT32_MAX) + 1}}}, "stop_token_ids"},
      {{{"stream", "yes"}}, "stream"},
      {{{"logprobs", 1}}, "logprobs"},
      {{{"top_logprobs", 21}}, "top_logprobs"},
      {{{"top_logprobs", 2}}, "top_logprobs"},  // without logprobs: true
      {{{"stop_token_ids", {-1}}}, "stop_token_ids"},
      {{{"model", nullptr}}, "model"},
      {{{"model", 5}}, "model"},
      {{{"tools", {{{"type", "function"}}}}}, "tools"},
      {{{"thinking", {{"type", "maybe"}}}}, "thinking"},
      {{{"reasoning_effort", "extreme"}}, "reasoning_effort"},
  };
  for (const auto& [extra, param] : cases) {
    const ApiError e = chat_error(chat_body(extra));
    EXPECT_EQ(e.status(), 400) << extra.dump();
    EXPECT_EQ(e.param(), param) << extra.dump() << ": " << e.what();
  }
  EXPECT_EQ(chat_error(Json::array()).status(), 400);
  EXPECT_EQ(completion_error(completion_body({{"logprobs", 21}})).param(), "logprobs");
  EXPECT_EQ(completion_error(completion_body({{"prompt", ""}})).param(), "prompt");
  EXPECT_EQ(completion_error(completion_body({{"prompt", {1, -3}}})).param(), "prompt");
  EXPECT_EQ(completion_error({{"model", "m"}}).param(), "prompt");
}

TEST(OpenAiRequest, MessagesAreValidated) {
  auto with_messages = [](Json messages) { return chat_body({{"messages", std::move(messages)}}); };
  const std::vector<Json> bad = {
      Json::array(),
      "hi",
      {{{"role", "developer"}, {"content", "x"}}, {{"role", "user"}, {"content", "hi"}}},
      {{{"role", "latest_reminder"}, {"content", "x"}}, {{"role", "user"}, {"content", "hi"}}},
      {{{"role", "user"}, {"content", "hi"}}, {{"role", "assistant"}, {"content", "prefix"}}},
      {{{"role", "user"}, {"content", "hi"}, {"name", "bob"}}},
      {{{"role", "user"}, {"content", "hi"}, {"task", "query"}}},
      {{{"role", "system"}, {"content", "x"}, {"tools", Json::array()}}, {{"role", "user"}, {"content", "hi"}}},
      {{{"role", "user"}, {"content", {{{"type", "image_url"}, {"image_url", "http://x"}}}}}},
  };
  for (const Json& messages : bad) {
    const ApiError e = chat_error(with_messages(messages));
    EXPECT_EQ(e.status(), 400) << messages.dump();
    EXPECT_EQ(e.param(), "messages") << messages.dump();
  }
  EXPECT_EQ(chat_error({{"model", "m"}}).param(), "messages");
}

TEST(OpenAiRequest, AssistantHistoryWithReasoningAndToolCallsIsAccepted) {
  const Json messages = {
      {{"role", "system"}, {"content", "be brief"}},
      {{"role", "user"}, {"content", "weather?"}},
      {{"role", "assistant"},
       {"content", nullptr},
       {"reasoning_content", "need the tool"},
       {"tool_calls",
        {{{"id", "call_1"}, {"type", "function"}, {"function", {{"name", "get"}, {"arguments", "{\"city\":\"Paris\"}"}}}}}}},
      {{"role", "tool"}, {"tool_call_id", "call_1"}, {"name", "get"}, {"content", "22C"}},
  };
  const Json tools = {{{"type", "function"}, {"function", {{"name", "get"}, {"parameters", {{"type", "object"}}}}}}};
  const ChatRequest r = parse_chat_request(chat_body({{"messages", messages}, {"tools", tools}}), {});
  EXPECT_TRUE(r.tools);
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0].tools, tools);  // request tools go onto the leading system message
  EXPECT_EQ(r.messages[2].reasoning_content, "need the tool");
  ASSERT_EQ(r.messages[2].tool_calls.size(), 1u);
  EXPECT_EQ(r.messages[2].tool_calls[0].name, "get");
  EXPECT_EQ(r.messages[3].tool_call_id, "call_1");

  // Without a system message the tools get a new one; tool_choice "none" leaves them out.
  const ChatRequest fresh = parse_chat_request(chat_body({{"tools", tools}}), {});
  ASSERT_EQ(fresh.messages.size(), 2u);
  EXPECT_EQ(fresh.messages[0].role, chat::Role::kSystem);
  EXPECT_EQ(fresh.messages[0].tools, tools);
  const ChatRequest none = parse_chat_request(chat_body({{"tools", tools}, {"tool_choice", "none"}}), {});
  EXPECT_FALSE(none.tools);
  ASSERT_EQ(none.messages.size(), 1u);
}

TEST(OpenAiRequest, ThinkingModeFollowsVllmAndTheHostedApi) {
  using chat::ThinkingMode;
  RequestDefaults thinking, chat_default;
  chat_default.thinking_mode = ThinkingMode::kChat;
  struct Case {
    Json extra;
    ThinkingMode expected;
    const RequestDefaults* d;
  };
  const std::vector<Case> cases = {
      {Json::object(), ThinkingMode::kThinking, &thinking},
      {Json::object(), ThinkingMode::kChat, &chat_default},
      {{{"chat_template_kwargs", {{"thinking", false}}}}, ThinkingMode::kChat, &thinking},
      {{{"chat_template_kwargs", {{"enable_thinking", true}}}}, ThinkingMode::kThinking, &chat_default},
      {{{"thinking", {{"type", "disabled"}}}}, ThinkingMode::kChat, &thinking},
      {{{"thinking", {{"type", "enabled"}}}}, ThinkingMode::kThinking, &chat_default},
      {{{"reasoning_effort", "none"}}, ThinkingMode::kChat, &thinking},
      {{{"chat_template_kwargs", {{"reasoning_effort", "none"}}}}, ThinkingMode::kChat, &thinking},
      {{{"chat_template_kwargs", {{"thinking", true}}}, {"thinking", {{"type", "enabled"}}}}, ThinkingMode::kThinking,
       &chat_default},
  };
  for (const Case& c : cases)
    EXPECT_EQ(parse_chat_request(chat_body(c.extra), *c.d).encode.mode, c.expected) << c.extra.dump();
  // Contradictions are refused, naming the second source.
  EXPECT_EQ(chat_error(chat_body({{"chat_template_kwargs", {{"thinking", true}}}, {"reasoning_effort", "none"}})).status(),
            400);
  EXPECT_EQ(chat_error(chat_body({{"thinking", {{"type", "disabled"}}},
                                  {"chat_template_kwargs", {{"enable_thinking", true}}}}))
                .param(),
            "chat_template_kwargs.enable_thinking");
  EXPECT_FALSE(parse_chat_request(chat_body({{"chat_template_kwargs", {{"drop_thinking", false}}}}), {})
                   .encode.drop_thinking);
}

TEST(OpenAiRequest, ReasoningEffortMapsOntoTheEncoderRevision) {
  using chat::EncoderRevision;
  const std::vector<std::tuple<EncoderRevision, std::string, std::string>> cases = {
      {EncoderRevision::kOriginal, "minimal", "high"}, {EncoderRevision::kOriginal, "low", "high"},
      {EncoderRevision::kOriginal, "medium", "high"},  {EncoderRevision::kOriginal, "high", "high"},
      {EncoderRevision::kOriginal, "xhigh", "high"},   {EncoderRevision::kOriginal, "max", "max"},
      {EncoderRevision::k0731, "minimal", "low"},      {EncoderRevision::k0731, "low", "low"},
      {EncoderRevision::k0731, "medium", "high"},      {EncoderRevision::k0731, "xhigh", "high"},
      {EncoderRevision::k0731, "max", "max"},          {EncoderRevision::k0731, "ultra", "max"},
  };
  for (const auto& [rev, api, expected] : cases) {
    EXPECT_EQ(encoder_effort(rev, api, "reasoning_effort"), expected) << api;
    RequestDefaults d;
    d.revision = rev;
    EXPECT_EQ(parse_chat_request(chat_body({{"reasoning_effort", api}}), d).encode.reasoning_effort, expected);
    EXPECT_EQ(parse_chat_request(chat_body({{"chat_template_kwargs", {{"reasoning_effort", api}}}}), d)
                  .encode.reasoning_effort,
              expected);
    // Every mapped level is one the encoder accepts (it throws for others).
    EXPECT_NO_THROW(chat::reasoning_effort_prefix(rev, expected));
  }
  RequestDefaults d;
  d.reasoning_effort = "max";
  EXPECT_EQ(parse_chat_request(chat_body(), d).encode.reasoning_effort, "max");
  EXPECT_EQ(chat_error(chat_body({{"reasoning_effort", "low"}, {"chat_template_kwargs", {{"reasoning_effort", "max"}}}}))
                .param(),
            "chat_template_kwargs.reasoning_effort");
}

TEST(OpenAiRequest, CompletionPrompts) {
  EXPECT_EQ(parse_completion_request(completion_body(), {}).prompt, "In the beginning");
  EXPECT_EQ(parse_completion_request(completion_body({{"prompt", {"one"}}}), {}).prompt, "one");
  const CompletionRequest ids = parse_completion_request(completion_body({{"prompt", {5, 6, 7}}, {"logprobs", 0}}), {});
  EXPECT_TRUE(ids.prompt_is_ids);
  EXPECT_EQ(ids.prompt_ids, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_TRUE(ids.gen.logprobs);
  EXPECT_EQ(ids.gen.top_logprobs, 0);
}

TEST(OpenAiRequest, ErrorBodyHasOpenAisShape) {
  const Json j = error_body(ApiError(404, "no such model", "model", "model_not_found"));
  EXPECT_EQ(j["error"]["message"], "no such model");
  EXPECT_EQ(j["error"]["type"], "not_found_error");
  EXPECT_EQ(j["error"]["param"], "model");
  EXPECT_EQ(j["error"]["code"], "model_not_found");
  const Json k = error_body(429, "busy");
  EXPECT_EQ(k["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(k["error"]["param"].is_null());
  EXPECT_TRUE(k["error"]["code"].is_null());
}

}  // namespace
}  // namespace dsv4::server
