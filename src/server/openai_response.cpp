// Building chat.completion and text_completion objects (openai_response.h). Streaming and
// non-streaming share one path: the same pushes through the same completion parser, so a DSML
// marker split across pieces is held back in both, and the two forms always agree.
#include "server/openai_response.h"

#include "chat/special_tokens.h"
#include "util/error.h"
#include "util/utf8.h"

namespace dsv4::server {

namespace {

// A token's text for a logprobs entry: its bytes, with a partial character shown as U+FFFD (the
// exact bytes go alongside in "bytes").
struct TokenText {
  std::string text;
  Json bytes = Json::array();
};

TokenText token_text(const Tokenizer& tok, int32_t id) {
  const std::string& raw = tok.token_bytes(id);
  TokenText t;
  t.text = utf8::repair(raw);
  for (unsigned char c : raw) t.bytes.push_back(int(c));
  return t;
}

// chat: {"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}
Json chat_logprob_entry(const Tokenizer& tok, const SampleResult& s, int32_t n_top) {
  TokenText t = token_text(tok, s.id);
  Json e = {{"token", t.text}, {"logprob", s.logprob}, {"bytes", std::move(t.bytes)}};
  Json top = Json::array();
  for (size_t i = 0; i < s.top.size() && int32_t(i) < n_top; ++i) {
    TokenText a = token_text(tok, s.top[i].id);
    top.push_back({{"token", a.text}, {"logprob", s.top[i].logprob}, {"bytes", std::move(a.bytes)}});
  }
  e["top_logprobs"] = std::move(top);
  return e;
}

// The lenient parser passes a tool-call block it cannot read (cut off by the length limit, or
// malformed) through as text. Markup must never reach a client as content or reasoning, so such
// text is dropped from its first marker on (with the "<", "</" and blank lines that lead into it),
// and so is everything after it in that field (`cut`). At the end of the output, a trailing piece
// that could be the start of a marker goes as well.
void strip_stray_dsml(std::string& text, bool final, bool& cut) {
  if (cut) {
    text.clear();
    return;
  }
  const size_t marker = text.find(chat::kDsml);
  if (marker != std::string::npos) {
    size_t start = marker;
    if (start > 0 && text[start - 1] == '/') --start;
    if (start > 0 && text[start - 1] == '<') --start;
    while (start > 0 && (text[start - 1] == '\n' || text[start - 1] == ' ')) --start;
    text.resize(start);
    cut = true;
    return;
  }
  if (!final) return;
  std::string opener(1, '<');  // (not "<" + string: GCC 12 warns falsely on that, -Wrestrict)
  opener += chat::kDsml;
  for (size_t n = std::min(text.size(), opener.size() - 1); n > 0; --n) {
    if (text.compare(text.size() - n, n, opener, 0, n) == 0) {
      text.resize(text.size() - n);
      while (!text.empty() && text.back() == '\n') text.pop_back();
      return;
    }
  }
}

size_t count_code_points(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

const char* finish_reason(FinishReason r, bool has_tool_calls) {
  switch (r) {
    case FinishReason::kEos:
    case FinishReason::kStopId:
    case FinishReason::kStopString: return has_tool_calls ? "tool_calls" : "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled:
    case FinishReason::kError: break;
  }
  DSV4_CHECK_MSG(false, "no finish_reason for a ", to_string(r), " request");
  return "";
}

Json usage_json(const RequestOutcome& o) {
  return {{"prompt_tokens", o.n_prompt},
          {"completion_tokens", o.n_generated},
          {"total_tokens", o.n_prompt + o.n_generated}};
}

std::string dump_json(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string sse_event(const Json& j) { return "data: " + dump_json(j) + "\n\n"; }

// ---- chat ----

ChatResponseBuilder::ChatResponseBuilder(ResponseMeta meta, chat::ThinkingMode mode,
                                         const Tokenizer& tokenizer, LogprobRequest logprobs,
                                         bool streaming, std::function<std::string()> new_tool_call_id)
    : meta_(std::move(meta)), tokenizer_(tokenizer), logprobs_(logprobs), streaming_(streaming),
      new_tool_call_id_(std::move(new_tool_call_id)), parser_(mode, chat::ParsePolicy::kLenient) {}

Json ChatResponseBuilder::chunk(Json delta, const char* finish) const {
  Json choice = {{"index", 0}, {"delta", std::move(delta)}, {"logprobs", nullptr},
                 {"finish_reason", finish ? Json(finish) : Json(nullptr)}};
  return {{"id", meta_.id},
          {"object", "chat.completion.chunk"},
          {"created", meta_.created},
          {"model", meta_.model},
          {"choices", Json::array({std::move(choice)})}};
}

Json ChatResponseBuilder::role_chunk() const { return chunk({{"role", "assistant"}, {"content", ""}}, nullptr); }

void ChatResponseBuilder::add_delta(std::vector<Json>& out, chat::ParseDelta d, bool final) {
  strip_stray_dsml(d.reasoning, final, reasoning_cut_);
  strip_stray_dsml(d.content, final, content_cut_);
  reasoning_ += d.reasoning;
  content_ += d.content;
  Json delta = Json::object();
  if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
  if (!d.content.empty()) delta["content"] = d.content;
  if (!d.tool_calls.empty()) {
    Json calls = Json::array();
    for (chat::ToolCall call : d.tool_calls) {
      call.id = new_tool_call_id_();
      calls.push_back({{"index", tool_calls_.size()},
                       {"id", call.id},
                       {"type", "function"},
                       {"function", {{"name", call.name}, {"arguments", call.arguments}}}});
      tool_calls_.push_back(std::move(call));
    }
    delta["tool_calls"] = std::move(calls);
  }
  if (!streaming_) return;
  const bool send_logprobs = logprobs_.enabled && !pending_logprobs_.empty();
  if (delta.empty() && !(final && send_logprobs)) return;
  Json c = chunk(std::move(delta), nullptr);
  if (send_logprobs) {
    c["choices"][0]["logprobs"] = {{"content", std::move(pending_logprobs_)}};
    pending_logprobs_ = Json::array();
  }
  out.push_back(std::move(c));
}

std::vector<Json> ChatResponseBuilder::push(std::string_view text, std::span<const SampleResult> tokens) {
  if (logprobs_.enabled)
    for (const SampleResult& s : tokens)
      (streaming_ ? pending_logprobs_ : all_logprobs_).push_back(chat_logprob_entry(tokenizer_, s, logprobs_.top));
  std::vector<Json> out;
  if (!text.empty()) add_delta(out, parser_.push(text), false);
  return out;
}

std::vector<Json> ChatResponseBuilder::finish(const RequestOutcome& o, bool include_usage) {
  std::vector<Json> out;
  // The output has ended: what the parser flushes now may end in a cut-off marker.
  if (o.finish == FinishReason::kEos) add_delta(out, parser_.push_eos(), true);
  add_delta(out, parser_.finish(), true);
  if (!streaming_) return out;
  Json last = chunk(Json::object(), finish_reason(o.finish, !tool_calls_.empty()));
  if (!include_usage) last["usage"] = usage_json(o);
  out.push_back(std::move(last));
  if (include_usage) {
    Json u = chunk(Json::object(), nullptr);
    u["choices"] = Json::array();
    u["usage"] = usage_json(o);
    out.push_back(std::move(u));
  }
  return out;
}

Json ChatResponseBuilder::response(const RequestOutcome& o) const {
  Json message = {{"role", "assistant"}};
  message["content"] = content_.empty() && !tool_calls_.empty() ? Json(nullptr) : Json(content_);
  message["reasoning_content"] = reasoning_.empty() ? Json(nullptr) : Json(reasoning_);
  if (!tool_calls_.empty()) {
    Json calls = Json::array();
    for (const chat::ToolCall& c : tool_calls_)
      calls.push_back({{"id", c.id}, {"type", "function"},
                       {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
    message["tool_calls"] = std::move(calls);
  }
  Json choice = {{"index", 0},
                 {"message", std::move(message)},
                 {"logprobs", logprobs_.enabled ? Json{{"content", all_logprobs_}} : Json(nullptr)},
                 {"finish_reason", finish_reason(o.finish, !tool_calls_.empty())}};
  return {{"id", meta_.id},
          {"object", "chat.completion"},
          {"created", meta_.created},
          {"model", meta_.model},
          {"choices", Json::array({std::move(choice)})},
          {"usage", usage_json(o)}};
}

// ---- completions ----

CompletionResponseBuilder::CompletionResponseBuilder(ResponseMeta meta, const Tokenizer& tokenizer,
                                                     LogprobRequest logprobs, bool streaming)
    : meta_(std::move(meta)), tokenizer_(tokenizer), logprobs_(logprobs), streaming_(streaming) {}

Json CompletionResponseBuilder::chunk(std::string text, Json logprobs, const char* finish) const {
  Json choice = {{"index", 0}, {"text", std::move(text)}, {"logprobs", std::move(logprobs)},
                 {"finish_reason", finish ? Json(finish) : Json(nullptr)}};
  return {{"id", meta_.id},
          {"object", "text_completion"},
          {"created", meta_.created},
          {"model", meta_.model},
          {"choices", Json::array({std::move(choice)})}};
}

// The legacy logprobs object of the tokens not yet sent (all of them when not streaming):
// {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}] or null, "text_offset"}.
Json CompletionResponseBuilder::take_logprobs(bool all) {
  if (!logprobs_.enabled) return nullptr;
  Json tokens = Json::array(), lps = Json::array(), tops = Json::array(), offsets = Json::array();
  for (size_t i = all ? 0 : tokens_sent_; i < tokens_.size(); ++i) {
    const SampleResult& s = tokens_[i];
    const std::string text = token_text(tokenizer_, s.id).text;
    tokens.push_back(text);
    lps.push_back(s.logprob);
    offsets.push_back(token_offset_);
    token_offset_ += int64_t(count_code_points(text));
    Json top = Json::object();
    for (size_t k = 0; k < s.top.size() && int32_t(k) < logprobs_.top; ++k)
      top[token_text(tokenizer_, s.top[k].id).text] = s.top[k].logprob;
    tops.push_back(std::move(top));
  }
  tokens_sent_ = tokens_.size();
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(lps)},
          {"top_logprobs", logprobs_.top > 0 ? std::move(tops) : Json(nullptr)},
          {"text_offset", std::move(offsets)}};
}

std::vector<Json> CompletionResponseBuilder::push(std::string_view text, std::span<const SampleResult> tokens) {
  text_ += text;
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  if (!streaming_ || text.empty()) return {};
  std::vector<Json> out;
  out.push_back(chunk(std::string(text), take_logprobs(false), nullptr));
  return out;
}

std::vector<Json> CompletionResponseBuilder::finish(const RequestOutcome& o, bool include_usage) {
  if (!streaming_) return {};
  std::vector<Json> out;
  Json last = chunk("", tokens_sent_ < tokens_.size() ? take_logprobs(false) : Json(nullptr),
                    finish_reason(o.finish, false));
  if (!include_usage) last["usage"] = usage_json(o);
  out.push_back(std::move(last));
  if (include_usage) {
    Json u = chunk("", nullptr, nullptr);
    u["choices"] = Json::array();
    u["usage"] = usage_json(o);
    out.push_back(std::move(u));
  }
  return out;
}

Json CompletionResponseBuilder::response(const RequestOutcome& o) {
  token_offset_ = 0;
  Json r = chunk(text_, take_logprobs(true), finish_reason(o.finish, false));
  r["usage"] = usage_json(o);
  return r;
}

}  // namespace dsv4::server
