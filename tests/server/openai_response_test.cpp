// Response building from known completion text: the streamed deltas add up to what the one-shot
// parser makes of the whole text, no DSML (nor any part of a marker) reaches content, reasoning or
// arguments however the text is split, the streaming and whole responses agree, and logprobs,
// finish_reason and usage have OpenAI's shapes. The text comes through the nano tokenizer and
// TextStream, as the server feeds it, and also in every two-way split at character boundaries.
#include <gtest/gtest.h>

#include <regex>

#include "chat/special_tokens.h"
#include "engine/text_stream.h"
#include "server/openai_response.h"
#include "support/test_util.h"
#include "util/utf8.h"

namespace dsv4::server {
namespace {

const Tokenizer& nano_tokenizer() {
  static const Tokenizer tok = Tokenizer::load(std::string(DSV4_SOURCE_DIR) + "/models/nano/tokenizer.json");
  return tok;
}

// Reasoning, an answer, then two tool calls (a string and a non-string parameter), as V4 writes them.
const std::string kToolCallText =
    "The user wants the weather; I should call the tool.</think>Let me look that up."
    "\n\n<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"get_weather\">\n"
    "<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n"
    "<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"get_time\">\n"
    "<｜DSML｜parameter name=\"zone\" string=\"true\">Europe/Paris</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>";

ResponseMeta meta() { return {"chatcmpl-test", 1700000000, "nano"}; }

std::function<std::string()> counter_ids() {
  auto n = std::make_shared<int>(0);
  return [n] { return "call_" + std::to_string((*n)++); };
}

RequestOutcome outcome(FinishReason f, int64_t n_generated) {
  RequestOutcome o;
  o.finish = f;
  o.n_prompt = 11;
  o.n_generated = n_generated;
  return o;
}

// What a client reassembles from chat.completion.chunk objects.
struct Assembled {
  std::string reasoning, content, finish;
  Json tool_calls = Json::array();
  Json usage;
  Json logprobs = Json::array();
  int usage_chunks = 0;
};

// Checks each chunk's shape and that no delta carries a piece of DSML, then accumulates it.
void accumulate(Assembled& a, const Json& c, bool text_may_hold_markers = false) {
  ASSERT_EQ(c["object"], "chat.completion.chunk");
  ASSERT_EQ(c["id"], "chatcmpl-test");
  if (c.contains("usage")) {
    a.usage = c["usage"];
    ++a.usage_chunks;
  }
  if (c["choices"].empty()) return;
  const Json& choice = c["choices"][0];
  const Json& d = choice["delta"];
  for (const char* field : {"reasoning_content", "content"}) {
    if (!d.contains(field)) continue;
    const std::string piece = d[field];
    if (!text_may_hold_markers) {
      EXPECT_EQ(piece.find("｜"), std::string::npos) << field << " leaks DSML: " << piece;
      EXPECT_EQ(piece.find("</think>"), std::string::npos) << field << ": " << piece;
    }
    (std::string(field) == "content" ? a.content : a.reasoning) += piece;
  }
  if (d.contains("tool_calls"))
    for (const Json& t : d["tool_calls"]) a.tool_calls.push_back(t);
  if (!choice["logprobs"].is_null())
    for (const Json& e : choice["logprobs"]["content"]) a.logprobs.push_back(e);
  if (!choice["finish_reason"].is_null()) a.finish = choice["finish_reason"];
}

// Feeds `text` as the server does: ids through TextStream, each piece with its token.
std::vector<Json> feed_tokens(ChatResponseBuilder& b, const std::string& text, std::vector<SampleResult>* sampled) {
  const Tokenizer& tok = nano_tokenizer();
  TextStream stream(tok, {});
  std::vector<Json> chunks;
  for (int32_t id : tok.encode(text)) {
    SampleResult s;
    s.id = id;
    s.logprob = -0.5f;
    s.top = {{id, -0.5f}, {7, -1.5f}};
    if (sampled) sampled->push_back(s);
    const TextStream::Piece p = stream.push(id);
    for (Json& c : b.push(p.text, std::span(&s, 1))) chunks.push_back(std::move(c));
  }
  for (Json& c : b.push(stream.finish().text, {})) chunks.push_back(std::move(c));
  return chunks;
}

TEST(ChatResponse, ToolCallsAndReasoningSplitLikeTheOneShotParser) {
  const chat::ParsedCompletion oracle = chat::parse_completion(kToolCallText + std::string(chat::kEos),
                                                               chat::ThinkingMode::kThinking, chat::ParsePolicy::kLenient);
  ASSERT_EQ(oracle.tool_calls.size(), 2u);
  const int64_t n_tokens = int64_t(nano_tokenizer().encode(kToolCallText).size()) + 1;  // + EOS

  ChatResponseBuilder stream(meta(), chat::ThinkingMode::kThinking, nano_tokenizer(), {}, true, counter_ids());
  Assembled a;
  accumulate(a, stream.role_chunk());
  for (const Json& c : feed_tokens(stream, kToolCallText, nullptr)) accumulate(a, c);
  for (const Json& c : stream.finish(outcome(FinishReason::kEos, n_tokens), false)) accumulate(a, c);

  EXPECT_EQ(a.reasoning, oracle.reasoning_content);
  EXPECT_EQ(a.content, oracle.content);
  EXPECT_EQ(a.content, "Let me look that up.");
  EXPECT_EQ(a.finish, "tool_calls");
  ASSERT_EQ(a.tool_calls.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const Json& t = a.tool_calls[i];
    EXPECT_EQ(t["index"], i);
    EXPECT_EQ(t["id"], "call_" + std::to_string(i));
    EXPECT_EQ(t["type"], "function");
    EXPECT_EQ(t["function"]["name"], oracle.tool_calls[i].name);
    const std::string args = t["function"]["arguments"];
    EXPECT_EQ(args.find("｜"), std::string::npos) << args;
    EXPECT_EQ(chat::parse_json(args, "arguments"), chat::parse_json(oracle.tool_calls[i].arguments, "oracle"));
  }
  EXPECT_EQ(chat::parse_json(a.tool_calls[0]["function"]["arguments"].get<std::string>(), "a"),
            Json({{"city", "Paris"}, {"days", 3}}));
  EXPECT_EQ(a.usage_chunks, 1);
  EXPECT_EQ(a.usage["completion_tokens"], n_tokens);
  EXPECT_EQ(a.usage["total_tokens"], n_tokens + 11);

  // The non-streaming response is the same message.
  ChatResponseBuilder whole(meta(), chat::ThinkingMode::kThinking, nano_tokenizer(), {}, false, counter_ids());
  EXPECT_TRUE(feed_tokens(whole, kToolCallText, nullptr).empty());
  EXPECT_TRUE(whole.finish(outcome(FinishReason::kEos, n_tokens), false).empty());
  const Json r = whole.response(outcome(FinishReason::kEos, n_tokens));
  EXPECT_EQ(r["object"], "chat.completion");
  const Json& m = r["choices"][0]["message"];
  EXPECT_EQ(m["role"], "assistant");
  EXPECT_EQ(m["content"], a.content);
  EXPECT_EQ(m["reasoning_content"], a.reasoning);
  ASSERT_EQ(m["tool_calls"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(m["tool_calls"][i]["id"], a.tool_calls[i]["id"]);
    EXPECT_EQ(m["tool_calls"][i]["function"], a.tool_calls[i]["function"]);
  }
  EXPECT_EQ(r["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_TRUE(r["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(r["usage"], a.usage);
}

// Every split of the text into two pieces (at character boundaries): markers cut anywhere never
// leak, and the message is always the same.
TEST(ChatResponse, NoMarkerLeaksAtAnySplit) {
  const chat::ParsedCompletion oracle = chat::parse_completion(kToolCallText + std::string(chat::kEos),
                                                               chat::ThinkingMode::kThinking, chat::ParsePolicy::kLenient);
  for (size_t cut = 1; cut < kToolCallText.size(); ++cut) {
    if ((static_cast<unsigned char>(kToolCallText[cut]) & 0xC0) == 0x80) continue;  // inside a character
    ChatResponseBuilder b(meta(), chat::ThinkingMode::kThinking, nano_tokenizer(), {}, true, counter_ids());
    Assembled a;
    for (const Json& c : b.push(kToolCallText.substr(0, cut), {})) accumulate(a, c);
    for (const Json& c : b.push(kToolCallText.substr(cut), {})) accumulate(a, c);
    for (const Json& c : b.finish(outcome(FinishReason::kEos, 1), true)) accumulate(a, c);
    ASSERT_EQ(a.reasoning, oracle.reasoning_content) << "cut at " << cut;
    ASSERT_EQ(a.content, oracle.content) << "cut at " << cut;
    ASSERT_EQ(a.tool_calls.size(), 2u) << "cut at " << cut;
    ASSERT_EQ(a.finish, "tool_calls");
    ASSERT_EQ(a.usage_chunks, 1);  // include_usage: the separate chunk only
  }
}

// Random multi-way splits, reasoning that stops inside a marker prefix, and a length cut inside
// the tool-call block: whatever is emitted is marker-free.
TEST(ChatResponse, RandomSplitsAndTruncationsStayClean) {
  test::Rng rng(14);
  for (int trial = 0; trial < 200; ++trial) {
    const size_t end = size_t(rng.integer(1, int64_t(kToolCallText.size())));
    std::string text = kToolCallText.substr(0, end);
    text.resize(utf8::valid_prefix_length(text));
    ChatResponseBuilder b(meta(), chat::ThinkingMode::kThinking, nano_tokenizer(), {}, true, counter_ids());
    Assembled a;
    size_t at = 0;
    while (at < text.size()) {
      size_t n = size_t(rng.integer(1, 12));
      while (at + n < text.size() && (static_cast<unsigned char>(text[at + n]) & 0xC0) == 0x80) ++n;
      for (const Json& c : b.push(text.substr(at, n), {})) accumulate(a, c);
      at += n;
    }
    for (const Json& c : b.finish(outcome(FinishReason::kLength, 9), false)) accumulate(a, c);
    EXPECT_EQ(a.finish, "length") << text;
    // Whatever text was emitted is a prefix of the full message's fields.
    EXPECT_EQ(std::string(kToolCallText).find(a.reasoning), 0u) << text;
    EXPECT_EQ(std::string("Let me look that up.\n\n").find(a.content), 0u) << "content '" << a.content << "' from " << text;
  }
}

TEST(ChatResponse, ChatModeStopAndLogprobs) {
  const std::string answer = "In the beginning God created the heaven and the earth.";
  LogprobRequest lp{true, 2};
  ChatResponseBuilder stream(meta(), chat::ThinkingMode::kChat, nano_tokenizer(), lp, true, counter_ids());
  std::vector<SampleResult> sampled;
  Assembled a;
  for (const Json& c : feed_tokens(stream, answer, &sampled)) accumulate(a, c);
  for (const Json& c : stream.finish(outcome(FinishReason::kStopString, int64_t(sampled.size())), true))
    accumulate(a, c);
  EXPECT_EQ(a.content, answer);
  EXPECT_EQ(a.reasoning, "");
  EXPECT_EQ(a.finish, "stop");
  ASSERT_EQ(a.logprobs.size(), sampled.size());
  std::string bytes;
  for (size_t i = 0; i < sampled.size(); ++i) {
    const Json& e = a.logprobs[i];
    EXPECT_EQ(e["token"], utf8::repair(nano_tokenizer().token_bytes(sampled[i].id)));
    EXPECT_FLOAT_EQ(e["logprob"].get<float>(), -0.5f);
    for (int v : e["bytes"]) bytes += char(v);
    ASSERT_EQ(e["top_logprobs"].size(), 2u);
    EXPECT_EQ(e["top_logprobs"][1]["token"], utf8::repair(nano_tokenizer().token_bytes(7)));
  }
  EXPECT_EQ(bytes, answer);  // the tokens' bytes are the text

  ChatResponseBuilder whole(meta(), chat::ThinkingMode::kChat, nano_tokenizer(), lp, false, counter_ids());
  feed_tokens(whole, answer, nullptr);
  whole.finish(outcome(FinishReason::kStopString, int64_t(sampled.size())), true);
  const Json r = whole.response(outcome(FinishReason::kStopString, int64_t(sampled.size())));
  EXPECT_EQ(r["choices"][0]["message"]["content"], answer);
  EXPECT_TRUE(r["choices"][0]["message"]["reasoning_content"].is_null());
  EXPECT_FALSE(r["choices"][0]["message"].contains("tool_calls"));
  EXPECT_EQ(r["choices"][0]["logprobs"]["content"], a.logprobs);
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
}

TEST(ChatResponse, RoleChunkAndFinishReasons) {
  ChatResponseBuilder b(meta(), chat::ThinkingMode::kThinking, nano_tokenizer(), {}, true, counter_ids());
  const Json role = b.role_chunk();
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(role["choices"][0]["finish_reason"].is_null());
  EXPECT_STREQ(finish_reason(FinishReason::kEos, false), "stop");
  EXPECT_STREQ(finish_reason(FinishReason::kStopId, false), "stop");
  EXPECT_STREQ(finish_reason(FinishReason::kStopString, true), "tool_calls");
  EXPECT_STREQ(finish_reason(FinishReason::kLength, true), "length");
  EXPECT_THROW(finish_reason(FinishReason::kCancelled, false), InternalError);
  EXPECT_EQ(sse_event(Json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(dump_json(Json("\xff")), "\"\xEF\xBF\xBD\"");  // invalid UTF-8 never breaks a reply
}

TEST(CompletionResponse, StreamedTextAndLegacyLogprobs) {
  const Tokenizer& tok = nano_tokenizer();
  const std::string text = "And God said, Let there be light: and there was light.";
  const std::vector<int32_t> ids = tok.encode(text);
  LogprobRequest lp{true, 1};
  CompletionResponseBuilder stream(meta(), tok, lp, true), whole(meta(), tok, lp, false);
  std::string streamed;
  Json tokens = Json::array(), offsets = Json::array();
  TextStream ts(tok, {});
  for (int32_t id : ids) {
    SampleResult s{id, -0.25f, {{id, -0.25f}}};
    const std::string piece = ts.push(id).text;
    whole.push(piece, std::span(&s, 1));
    for (const Json& c : stream.push(piece, std::span(&s, 1))) {
      EXPECT_EQ(c["object"], "text_completion");
      streamed += c["choices"][0]["text"].get<std::string>();
      for (const Json& t : c["choices"][0]["logprobs"]["tokens"]) tokens.push_back(t);
      for (const Json& o : c["choices"][0]["logprobs"]["text_offset"]) offsets.push_back(o);
    }
  }
  const RequestOutcome o = outcome(FinishReason::kLength, int64_t(ids.size()));
  const std::vector<Json> last = stream.finish(o, false);
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last[0]["usage"]["completion_tokens"], int64_t(ids.size()));
  EXPECT_EQ(streamed, text);
  ASSERT_EQ(tokens.size(), ids.size());

  whole.finish(o, false);
  const Json r = whole.response(o);
  EXPECT_EQ(r["choices"][0]["text"], text);
  EXPECT_EQ(r["choices"][0]["logprobs"]["tokens"], tokens);
  EXPECT_EQ(r["choices"][0]["logprobs"]["text_offset"], offsets);
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(r["choices"][0]["logprobs"]["token_logprobs"][i], -0.25f);
    EXPECT_EQ(r["choices"][0]["logprobs"]["top_logprobs"][i].size(), 1u);
    // text_offset is where the token starts in the text (ASCII here: bytes = characters)
    EXPECT_EQ(text.compare(offsets[i].get<size_t>(), tokens[i].get<std::string>().size(), tokens[i].get<std::string>()), 0);
  }
  EXPECT_EQ(r["usage"]["prompt_tokens"], 11);
}

}  // namespace
}  // namespace dsv4::server
