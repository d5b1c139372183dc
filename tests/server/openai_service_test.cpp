// The endpoints end to end without sockets: OpenAiService on a real Scheduler over ScriptedForward
// (known completion text behind known prompts). Tool calls and reasoning in both response forms,
// stop strings, the context / model / queue errors with their statuses, and a client that goes
// away: its request is cancelled and its KV blocks go back to the pool.
#include <gtest/gtest.h>

#include <thread>

#include "server/metrics.h"
#include "server/openai_service.h"
#include "server/scripted_forward.h"

namespace dsv4::server {
namespace {

using chat::Json;

const Tokenizer& nano_tokenizer() {
  static const Tokenizer tok = Tokenizer::load(std::string(DSV4_SOURCE_DIR) + "/models/nano/tokenizer.json");
  return tok;
}

const std::string kWeatherCall =
    "I need the weather tool.</think>Checking."
    "\n\n<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"get_weather\">\n"
    "<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>";

std::vector<test::Script> scripts() {
  return {{"What is the weather in Paris?", kWeatherCall},
          {"Count for me.", "one two three four five six seven eight"}};
}

// A scheduler running on its own thread, and the service on top.
struct Served {
  explicit Served(test::ScriptedOptions fo = {}, SchedulerOptions so = {}, bool run = true)
      : forward(nano_tokenizer(), scripts(), fo), scheduler(forward, so) {
    ServiceConfig c;
    c.model_name = "nano";
    c.max_context = forward.kv_cache().max_context;
    c.eos_id = int32_t(forward.config().eos_token_id);
    c.vocab_size = int32_t(forward.config().vocab_size);
    c.default_max_tokens = 512;
    service = std::make_unique<OpenAiService>(scheduler, nano_tokenizer(), metrics, c);
    if (run) thread = std::thread([this] { scheduler.run(); });
  }
  ~Served() {
    scheduler.stop(true);
    if (thread.joinable()) thread.join();
  }
  test::ScriptedForward forward;
  Scheduler scheduler;
  ServerMetrics metrics;
  std::unique_ptr<OpenAiService> service;
  std::thread thread;
};

Json chat(const std::string& user, Json extra = Json::object()) {
  Json b = {{"model", "nano"}, {"messages", {{{"role", "user"}, {"content", user}}}}};
  for (auto& [k, v] : extra.items()) b[k] = v;
  return b;
}

Json body_of(const HttpReply& r) { return chat::parse_json(r.body, "reply"); }

// Reads a stream to its end: the JSON of every event, and whether [DONE] came last.
std::vector<Json> drain(EventStream& s, bool* done) {
  std::vector<Json> events;
  std::string text;
  while (auto piece = s.next(std::chrono::milliseconds(20))) text += *piece;
  *done = text.size() >= 14 && text.compare(text.size() - 14, 14, "data: [DONE]\n\n") == 0;
  size_t at = 0;
  while ((at = text.find("data: {", at)) != std::string::npos) {
    const size_t end = text.find("\n\n", at);
    events.push_back(chat::parse_json(text.substr(at + 6, end - at - 6), "event"));
    at = end;
  }
  return events;
}

// Polls until `pred` or ~5 s.
template <class Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

TEST(OpenAiService, ToolCallNonStreaming) {
  Served s;
  const HttpReply r = s.service->chat_completions(chat("What is the weather in Paris?").dump(), nullptr);
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = body_of(r);
  const Json& m = j["choices"][0]["message"];
  ASSERT_TRUE(m.contains("tool_calls")) << r.body;
  EXPECT_EQ(m["reasoning_content"], "I need the weather tool.");
  EXPECT_EQ(m["content"], "Checking.");
  ASSERT_EQ(m["tool_calls"].size(), 1u);
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(chat::parse_json(m["tool_calls"][0]["function"]["arguments"].get<std::string>(), "args"),
            Json({{"city", "Paris"}}));
  const std::string id = m["tool_calls"][0]["id"];
  EXPECT_EQ(id.size(), 29u);
  EXPECT_EQ(id.rfind("call_", 0), 0u);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls");
  // usage: the prompt as the encoder renders it; the completion plus EOS.
  const int64_t completion = int64_t(nano_tokenizer().encode(kWeatherCall).size()) + 1;
  EXPECT_EQ(j["usage"]["completion_tokens"], completion);
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int64_t>(), 5);
  EXPECT_EQ(s.service->in_flight(), 0);
}

TEST(OpenAiService, ToolCallStreamingMatches) {
  Served s;
  HttpReply r = s.service->chat_completions(chat("What is the weather in Paris?", {{"stream", true}}).dump(), nullptr);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(r.stream);
  EXPECT_EQ(r.content_type, "text/event-stream");
  EXPECT_EQ(s.service->in_flight(), 1);
  bool done = false;
  const std::vector<Json> events = drain(*r.stream, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  std::string reasoning, content, finish;
  Json calls = Json::array();
  for (const Json& e : events) {
    const Json& d = e["choices"][0]["delta"];
    if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
    if (d.contains("content")) content += d["content"].get<std::string>();
    if (d.contains("tool_calls")) calls.insert(calls.end(), d["tool_calls"].begin(), d["tool_calls"].end());
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(reasoning, "I need the weather tool.");
  EXPECT_EQ(content, "Checking.");
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0]["function"]["name"], "get_weather");
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_TRUE(events.back().contains("usage"));
  EXPECT_EQ(s.service->in_flight(), 0);
}

TEST(OpenAiService, StopStringsAndChatMode) {
  Served s;
  const HttpReply r = s.service->chat_completions(
      chat("Count for me.", {{"stop", {"five"}}, {"chat_template_kwargs", {{"thinking", false}}}}).dump(), nullptr);
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = body_of(r);
  // Chat mode: the output is content from the first token (the script has no </think>).
  EXPECT_EQ(j["choices"][0]["message"]["content"], "one two three four ");
  EXPECT_TRUE(j["choices"][0]["message"]["reasoning_content"].is_null());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  // Generation stopped at the stop string, not at the end of the script.
  EXPECT_LT(j["usage"]["completion_tokens"].get<int64_t>(),
            int64_t(nano_tokenizer().encode("one two three four five six seven eight").size()));

  const HttpReply len = s.service->chat_completions(chat("Count for me.", {{"max_tokens", 2}}).dump(), nullptr);
  EXPECT_EQ(body_of(len)["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body_of(len)["usage"]["completion_tokens"], 2);
}

// What ends an output without being part of it, and what must still come out at the end:
// a stop token id is not in the text; text held back as a possible stop-string start is sent when
// the output ends without the stop string; with ignore_eos every EOS is a token of the output.
TEST(OpenAiService, StopTokensHeldBackTextAndIgnoreEos) {
  Served s;
  const std::string script = "one two three four five six seven eight";
  const std::vector<int32_t> ids = nano_tokenizer().encode(script);
  ASSERT_GE(ids.size(), 5u);
  const Json chat_mode = {{"thinking", false}};

  size_t k = 3;  // the first token from the 4th on that has not come before
  while (k < ids.size() && std::find(ids.begin(), ids.begin() + std::ptrdiff_t(k), ids[k]) != ids.begin() + std::ptrdiff_t(k)) ++k;
  ASSERT_LT(k, ids.size());
  HttpReply r = s.service->chat_completions(
      chat("Count for me.", {{"stop_token_ids", {ids[k]}}, {"chat_template_kwargs", chat_mode}}).dump(), nullptr);
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = body_of(r);
  EXPECT_EQ(j["choices"][0]["message"]["content"],
            nano_tokenizer().decode(std::span<const int32_t>(ids.data(), k)));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");

  r = s.service->chat_completions(
      chat("Count for me.", {{"stop", {"eight!"}}, {"chat_template_kwargs", chat_mode}}).dump(), nullptr);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r)["choices"][0]["message"]["content"], script);

  r = s.service->chat_completions(chat("Count for me.", {{"ignore_eos", true},
                                                         {"max_tokens", int64_t(ids.size()) + 3},
                                                         {"logprobs", true},
                                                         {"chat_template_kwargs", chat_mode}})
                                      .dump(),
                                  nullptr);
  ASSERT_EQ(r.status, 200) << r.body;
  j = body_of(r);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], int64_t(ids.size()) + 3);
  EXPECT_EQ(j["choices"][0]["logprobs"]["content"].size(), ids.size() + 3) << "every EOS is a token of the output";
  EXPECT_EQ(j["choices"][0]["message"]["content"], script);  // the text ends at the first EOS
}

TEST(OpenAiService, ErrorsHaveTheirStatus) {
  test::ScriptedOptions small;
  small.max_context = 64;
  Served s(small);
  auto error_of = [](const HttpReply& r) { return chat::parse_json(r.body, "reply")["error"]; };

  HttpReply r = s.service->chat_completions("{\"model\": ", nullptr);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(error_of(r)["code"], "invalid_json");
  r = s.service->chat_completions(std::string(200, '[') + std::string(200, ']'), nullptr);
  EXPECT_EQ(r.status, 400);  // nesting beyond the limit, refused before parsing
  r = s.service->chat_completions("{\"model\": \"nano\", \"max_tokens\": 1e999}", nullptr);
  EXPECT_EQ(r.status, 400);  // a number beyond a double (was a 500: the parser's out_of_range escaped)
  EXPECT_EQ(error_of(r)["code"], "invalid_json");

  r = s.service->chat_completions(chat("hi", {{"model", "gpt-4"}}).dump(), nullptr);
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(error_of(r)["code"], "model_not_found");

  r = s.service->chat_completions(chat("hi", {{"max_tokens", 60}}).dump(), nullptr);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(error_of(r)["code"], "context_length_exceeded");
  const std::string message = error_of(r)["message"];
  EXPECT_NE(message.find("64 tokens"), std::string::npos) << message;  // the context
  EXPECT_NE(message.find(" 60 in the completion"), std::string::npos) << message;

  r = s.service->completions(Json{{"model", "nano"}, {"prompt", std::vector<int>(100, 5)}}.dump(), nullptr);
  EXPECT_EQ(r.status, 400);  // the prompt alone fills the context
  EXPECT_EQ(error_of(r)["code"], "context_length_exceeded");

  r = s.service->completions(Json{{"model", "nano"}, {"prompt", {5, 9999999}}}.dump(), nullptr);
  EXPECT_EQ(r.status, 400);  // an id outside the vocabulary (the scheduler's check)
  r = s.service->chat_completions(chat("hi", {{"stop_token_ids", {999999}}}).dump(), nullptr);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(error_of(r)["param"], "stop_token_ids");
  r = s.service->chat_completions(chat("hi", {{"n", 3}}).dump(), nullptr);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(error_of(r)["param"], "n");
  EXPECT_EQ(s.service->in_flight(), 0);
}

TEST(OpenAiService, QueueFullIs429) {
  SchedulerOptions so;
  so.max_waiting = 2;
  Served s({}, so, /*run=*/false);  // nothing admits: requests stay waiting
  std::vector<HttpReply> held;
  for (int i = 0; i < 2; ++i) {
    held.push_back(s.service->completions(Json{{"model", "nano"}, {"prompt", "a"}, {"stream", true}}.dump(), nullptr));
    ASSERT_EQ(held.back().status, 200);
  }
  const HttpReply r = s.service->completions(Json{{"model", "nano"}, {"prompt", "a"}}.dump(), nullptr);
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(chat::parse_json(r.body, "reply")["error"]["type"], "rate_limit_error");
  EXPECT_EQ(s.scheduler.stats().waiting, 2);
}

TEST(OpenAiService, HangUpCancelsAndFreesTheKv) {
  test::ScriptedOptions slow;
  slow.step_delay = std::chrono::milliseconds(5);
  Served s(slow);
  // Non-streaming: the client is gone after a few polls.
  int polls = 0;
  const HttpReply r = s.service->completions(
      Json{{"model", "nano"}, {"prompt", "filler text"}, {"max_tokens", 4000}}.dump(), [&] { return ++polls > 3; });
  EXPECT_EQ(r.status, 499);
  EXPECT_TRUE(eventually([&] { return s.scheduler.stats().kv_blocks_used == 0 && s.scheduler.stats().running == 0; }));

  // Streaming: read a little, then the connection drops (the HTTP layer calls cancel()).
  HttpReply st = s.service->completions(
      Json{{"model", "nano"}, {"prompt", "filler text"}, {"max_tokens", 4000}, {"stream", true}}.dump(), nullptr);
  ASSERT_TRUE(st.stream);
  std::string got;
  while (got.find("data: ") == std::string::npos) got += st.stream->next(std::chrono::milliseconds(50)).value();
  // (The scheduler publishes its counts at the end of a step, after the step's tokens went out.)
  EXPECT_TRUE(eventually([&] { return s.scheduler.stats().kv_blocks_used > 0; }));
  st.stream->cancel();
  EXPECT_EQ(s.service->in_flight(), 0);
  EXPECT_FALSE(st.stream->next(std::chrono::milliseconds(1)).has_value());
  auto both_cancelled = [&] {
    const std::string m = s.metrics.render(s.scheduler.stats(), s.service->in_flight());
    return m.find("dsv4_requests_finished_total{reason=\"cancelled\"} 2") != std::string::npos;
  };
  EXPECT_TRUE(eventually([&] {
    return both_cancelled() && s.scheduler.stats().kv_blocks_used == 0 && s.scheduler.stats().running == 0;
  })) << s.metrics.render(s.scheduler.stats(), s.service->in_flight());
}

TEST(OpenAiService, ShutdownCancelEndsStreamsWithAnError) {
  test::ScriptedOptions slow;
  slow.step_delay = std::chrono::milliseconds(5);
  Served s(slow);
  HttpReply st = s.service->completions(
      Json{{"model", "nano"}, {"prompt", "x"}, {"max_tokens", 4000}, {"stream", true}}.dump(), nullptr);
  ASSERT_TRUE(st.stream);
  s.scheduler.stop(/*cancel_all=*/true);
  bool done = false;
  const std::vector<Json> events = drain(*st.stream, &done);
  EXPECT_TRUE(done);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back()["error"]["code"], "server_shutting_down");
}

TEST(OpenAiService, MetricsAfterRequests) {
  Served s;
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(s.service->chat_completions(chat("Count for me.", {{"max_tokens", 4}}).dump(), nullptr).status, 200);
  // The scheduler publishes its counts at the end of the step that finished the last request.
  ASSERT_TRUE(eventually([&] { return s.scheduler.stats().running == 0; }));
  const std::string m = s.metrics.render(s.scheduler.stats(), s.service->in_flight());
  EXPECT_NE(m.find("dsv4_requests_finished_total{reason=\"length\"} 3"), std::string::npos) << m;
  EXPECT_NE(m.find("dsv4_generation_tokens_total 12"), std::string::npos) << m;
  EXPECT_NE(m.find("dsv4_time_to_first_token_seconds_count 3"), std::string::npos) << m;
  EXPECT_NE(m.find("dsv4_inter_token_latency_seconds_count 9"), std::string::npos) << m;  // 3 gaps each
  EXPECT_NE(m.find("dsv4_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3"), std::string::npos) << m;
  EXPECT_NE(m.find("dsv4_requests_running 0"), std::string::npos) << m;
  EXPECT_NE(m.find("# TYPE dsv4_kv_cache_usage_ratio gauge"), std::string::npos) << m;
  EXPECT_NE(m.find("dsv4_spec_decode_verify_steps_total 0"), std::string::npos) << m;  // no --speculative
  EXPECT_NE(m.find("# TYPE dsv4_spec_decode_acceptance_rate gauge"), std::string::npos) << m;
  const Json models = chat::parse_json(s.service->models().body, "models");
  EXPECT_EQ(models["data"][0]["id"], "nano");
  EXPECT_EQ(models["object"], "list");
}

TEST(Histogram, CumulativeBuckets) {
  Histogram h({1.0, 2.0});
  for (double v : {0.5, 1.0, 1.5, 3.0}) h.observe(v);
  std::string out;
  h.render(out, "x", "help");
  EXPECT_NE(out.find("x_bucket{le=\"1\"} 2\n"), std::string::npos) << out;  // le is inclusive
  EXPECT_NE(out.find("x_bucket{le=\"2\"} 3\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_bucket{le=\"+Inf\"} 4\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_sum 6\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_count 4\n"), std::string::npos) << out;
}

}  // namespace
}  // namespace dsv4::server
