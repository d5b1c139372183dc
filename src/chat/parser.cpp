// The completion parser (encoding.md §5): a state machine over streamed text that holds back any
// suffix that could still become a marker, plus the DSML block grammar. Strict mode follows the
// official parser; lenient mode follows what vLLM/SGLang servers accept (see parser.h).
#include "chat/parser.h"

#include <algorithm>
#include <optional>
#include <span>

#include "chat/py_json.h"
#include "chat/special_tokens.h"
#include "util/error.h"

namespace dsv4::chat {

namespace {

// "\n\n<｜DSML｜tool_calls": the official start of a tool-call block; the "\n\n" is not content.
const std::string kBlockStart = std::string("\n\n<") + std::string(kDsml) + "tool_calls";
const std::string kBlockStartBare = std::string("<") + std::string(kDsml) + "tool_calls";
const std::string kParameterEnd = std::string("/") + std::string(kDsml) + "parameter";

constexpr std::string_view kInvokeMarkers[] = {kInvokeOpen};
constexpr std::string_view kParameterMarkers[] = {kParameterOpen, kInvokeClose};

struct Match {
  size_t pos = std::string::npos;
  std::string_view marker;
};

// The earliest of `markers` in `s` from `from`; ties go to the longer marker (listed first).
Match find_first(std::string_view s, std::span<const std::string_view> markers, size_t from = 0) {
  Match best;
  for (std::string_view m : markers) {
    const size_t p = s.find(m, from);
    if (p != std::string_view::npos && p < best.pos) best = {p, m};
  }
  return best;
}

// Length of the longest suffix of `s` that is a proper prefix of some marker: those bytes must
// wait for more text before they can be emitted.
size_t held_back(std::string_view s, std::span<const std::string_view> markers) {
  size_t keep = 0;
  for (std::string_view m : markers) {
    for (size_t n = std::min(s.size(), m.size() - 1); n > keep; --n)
      if (s.substr(s.size() - n) == m.substr(0, n)) { keep = n; break; }
  }
  return keep;
}

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// ---- DSML block grammar (§5 step 3) ----

class BlockReader {
 public:
  BlockReader(std::string_view body, ParsePolicy policy, std::vector<std::string>* issues)
      : s_(body), lenient_(policy == ParsePolicy::kLenient), issues_(issues) {}

  std::vector<ToolCall> read() {
    std::vector<ToolCall> calls;
    while (true) {
      // The text before the next invoke (or the end) is the rest of the previous tag: ">\n".
      const Match m = find_first(s_, kInvokeMarkers, pos_);
      separator(s_.substr(pos_, m.pos == std::string::npos ? std::string::npos : m.pos - pos_),
                "before an invoke or </｜DSML｜tool_calls>");
      if (m.pos == std::string::npos) return calls;
      pos_ = m.pos + m.marker.size();
      calls.push_back(read_invoke());
    }
  }

 private:
  [[noreturn]] void error(const std::string& what) const { fail("tool-call block: ", what); }

  void separator(std::string_view skipped, const char* where) {
    if (skipped == ">\n") return;
    if (lenient_) {
      const std::string_view t = trim(skipped);
      if (t == ">" || t.empty()) return;
    }
    error(cat("expected '>\\n' ", where, ", got '", skipped, "'"));
  }

  ToolCall read_invoke() {
    ToolCall call;
    Match m = find_first(s_, kParameterMarkers, pos_);
    if (m.pos == std::string::npos) error("invoke without </｜DSML｜invoke>");
    call.name = read_name(s_.substr(pos_, m.pos - pos_));
    pos_ = m.pos + m.marker.size();

    struct Param { std::string key, value; bool is_string; };
    std::vector<Param> params;
    while (m.marker == kParameterOpen) {
      const size_t end = s_.find(kParameterEnd, pos_);
      if (end == std::string::npos) error("parameter without </｜DSML｜parameter>");
      Param p;
      read_parameter(s_.substr(pos_, end - pos_), &p.key, &p.value, &p.is_string);
      pos_ = end + kParameterEnd.size();
      auto dup = std::find_if(params.begin(), params.end(), [&](const Param& q) { return q.key == p.key; });
      if (dup != params.end()) {
        if (!lenient_) error(cat("duplicate parameter name '", p.key, "'"));
        issues_->push_back(cat("tool call '", call.name, "': duplicate parameter '", p.key, "', the last one kept"));
        *dup = std::move(p);
      } else {
        params.push_back(std::move(p));
      }
      m = find_first(s_, kParameterMarkers, pos_);
      if (m.pos == std::string::npos) error("invoke without </｜DSML｜invoke>");
      separator(s_.substr(pos_, m.pos - pos_), "after a parameter");
      pos_ = m.pos + m.marker.size();
    }

    // §5 step 4: {"key": value, ...} with string values JSON-quoted and others written raw.
    call.arguments = "{";
    for (size_t i = 0; i < params.size(); ++i) {
      if (i) call.arguments += ", ";
      call.arguments += py_json_quote(params[i].key);
      call.arguments += ": ";
      if (params[i].is_string) {
        call.arguments += py_json_quote(params[i].value);
      } else if (lenient_ && !valid_json(params[i].value)) {
        issues_->push_back(cat("tool call '", call.name, "': parameter '", params[i].key,
                               "' is string=\"false\" but not JSON; kept as a string"));
        call.arguments += py_json_quote(params[i].value);
      } else {
        call.arguments += params[i].value;
      }
    }
    call.arguments += "}";
    return call;
  }

  // nlohmann stops reading at a NUL byte, so "2\0" would pass; refuse NUL explicitly.
  static bool valid_json(std::string_view v) {
    return !v.empty() && v.find('\0') == std::string_view::npos && Json::accept(v.begin(), v.end());
  }

  // ` name="NAME">\n` (the official regex ^\s*name="(.*?)">\n$, where $ may also sit before one
  // more final newline).
  std::string read_name(std::string_view part) {
    std::string_view t = part;
    while (!t.empty() && is_space(t.front())) t.remove_prefix(1);
    if (lenient_) {
      t = trim(t);
      if (t.substr(0, 4) == "name") {
        t = trim(t.substr(4));
        if (!t.empty() && t.front() == '=') {
          t = trim(t.substr(1));
          if (t.size() >= 2 && t.front() == '"') {
            const size_t q = t.find('"', 1);
            if (q != std::string_view::npos && trim(t.substr(q + 1)) == ">")
              return std::string(t.substr(1, q - 1));
          }
        }
      }
      error(cat("bad invoke name '", part, "'"));
    }
    constexpr std::string_view kHead = "name=\"";
    std::string_view tail;
    if (t.size() >= 4 && t.substr(t.size() - 4) == "\">\n\n") tail = t.substr(0, t.size() - 4);
    else if (t.size() >= 3 && t.substr(t.size() - 3) == "\">\n") tail = t.substr(0, t.size() - 3);
    if (t.substr(0, kHead.size()) != kHead || tail.size() < kHead.size())
      error(cat("bad invoke name '", part, "'"));
    return std::string(tail.substr(kHead.size()));
  }

  // ` name="K" string="true|false">V<` (V may span lines; the final '<' opens the closing tag).
  void read_parameter(std::string_view part, std::string* key, std::string* value, bool* is_string) {
    std::string_view t = part;
    if (lenient_) {
      while (!t.empty() && is_space(t.front())) t.remove_prefix(1);
    } else if (t.substr(0, 1) == " ") {
      t.remove_prefix(1);
    } else {
      error(cat("bad parameter '", part, "'"));
    }
    auto attribute = [&](std::string_view name) -> std::optional<std::string_view> {
      if (t.substr(0, name.size()) != name) return std::nullopt;
      t.remove_prefix(name.size());
      if (lenient_) t = t.substr(std::min(t.size(), t.find_first_not_of(" \t\r\n")));
      if (t.substr(0, 1) != "=") return std::nullopt;
      t.remove_prefix(1);
      if (lenient_) t = t.substr(std::min(t.size(), t.find_first_not_of(" \t\r\n")));
      if (t.substr(0, 1) != "\"") return std::nullopt;
      t.remove_prefix(1);
      return t;
    };
    if (!attribute("name")) error(cat("bad parameter '", part, "'"));
    // The name runs to the first `" string="true|false">` (the regex's lazy match).
    size_t k = 0;
    for (;; ++k) {
      k = t.find('"', k);
      if (k == std::string_view::npos) error(cat("bad parameter '", part, "'"));
      std::string_view rest = t.substr(k + 1);
      std::string_view after = rest;
      if (lenient_) after = after.substr(std::min(after.size(), after.find_first_not_of(" \t\r\n")));
      else if (after.substr(0, 1) == " ") after.remove_prefix(1);
      else continue;
      std::string_view saved = t;
      t = after;
      auto flag = attribute("string");
      if (flag && (flag->substr(0, 5) == "true\"" || flag->substr(0, 6) == "false\"")) {
        *is_string = flag->substr(0, 4) == "true";
        std::string_view v = flag->substr(*is_string ? 5 : 6);
        if (lenient_) v = v.substr(std::min(v.size(), v.find_first_not_of(" \t")));
        if (v.substr(0, 1) == ">") {
          v.remove_prefix(1);
          // The official regex ends in `<$`: the value stops at a final '<' (or '<' + newline).
          if (v.size() >= 2 && v.substr(v.size() - 2) == "<\n") v.remove_suffix(2);
          else if (!v.empty() && v.back() == '<') v.remove_suffix(1);
          else error(cat("bad parameter '", part, "'"));
          *key = std::string(saved.substr(0, k));
          *value = std::string(v);
          return;
        }
      }
      t = saved;
    }
  }

  std::string_view s_;
  size_t pos_ = 0;
  bool lenient_;
  std::vector<std::string>* issues_;
};

}  // namespace

std::vector<ToolCall> parse_dsml_block(std::string_view body, ParsePolicy policy,
                                       std::vector<std::string>* issues) {
  std::vector<std::string> ignored;
  return BlockReader(body, policy, issues ? issues : &ignored).read();
}

// ---- the streaming state machine ----

CompletionParser::CompletionParser(ThinkingMode mode, ParsePolicy policy)
    : mode_(mode), policy_(policy),
      state_(mode == ThinkingMode::kThinking ? State::kReasoning : State::kContent) {}

void CompletionParser::issue(std::string what) {
  if (policy_ == ParsePolicy::kStrict) throw Error(what);
  result_.issues.push_back(std::move(what));
}

void CompletionParser::emit(ParseDelta& delta, std::string_view text, bool reasoning) {
  if (text.empty()) return;
  at_start_ = false;
  if (reasoning) {
    delta.reasoning += text;
    result_.reasoning_content += text;
  } else {
    if (after_block_ && !trim(text).empty()) {
      issue("text after the tool calls was kept as content");
      after_block_ = false;
    }
    delta.content += text;
    result_.content += text;
  }
}

// A finished block: its calls, or (lenient) the raw text as content when it does not parse.
void CompletionParser::close_block(ParseDelta& delta, std::string_view body, std::string_view raw) {
  std::vector<std::string> block_issues;
  try {
    std::vector<ToolCall> calls = parse_dsml_block(body, policy_, &block_issues);
    for (std::string& s : block_issues) issue(std::move(s));
    for (ToolCall& c : calls) {
      delta.tool_calls.push_back(c);
      result_.tool_calls.push_back(std::move(c));
    }
  } catch (const Error& e) {
    if (policy_ == ParsePolicy::kStrict) throw;
    issue(cat("malformed tool-call block kept as content: ", e.what()));
    emit(delta, raw, false);
  }
}

void CompletionParser::run(ParseDelta& delta, bool final) {
  const bool lenient = policy_ == ParsePolicy::kLenient;
  while (true) {
    switch (state_) {
      case State::kReasoning: {
        if (lenient && at_start_) {
          // A model that re-opens the think block itself: drop the duplicate <think>.
          if (!final && buffer_.size() < kThinkStart.size() &&
              kThinkStart.substr(0, buffer_.size()) == buffer_)
            return;
          if (buffer_.compare(0, kThinkStart.size(), kThinkStart) == 0) {
            buffer_.erase(0, kThinkStart.size());
            issue("a leading <think> was dropped (the prompt already opened the reasoning)");
          }
          if (!buffer_.empty()) at_start_ = false;
        }
        const std::vector<std::string_view> markers =
            lenient ? std::vector<std::string_view>{kThinkEnd, kBlockStart, kBlockStartBare, kEos}
                    : std::vector<std::string_view>{kThinkEnd, kBlockStart, kEos};
        const Match m = find_first(buffer_, markers);
        if (m.pos == std::string::npos) {
          const size_t keep = final ? 0 : held_back(buffer_, markers);
          emit(delta, std::string_view(buffer_).substr(0, buffer_.size() - keep), true);
          buffer_.erase(0, buffer_.size() - keep);
          return;
        }
        emit(delta, std::string_view(buffer_).substr(0, m.pos), true);
        buffer_.erase(0, m.pos + m.marker.size());
        if (m.marker == kThinkEnd) {
          state_ = State::kContent;
        } else if (m.marker == kEos) {
          issue("missing </think>: the output ended inside the reasoning");
          result_.saw_eos = true;
          state_ = State::kDone;
        } else {
          issue("missing </think> before the tool calls; the reasoning was split there");
          block_opener_ = m.marker;
          state_ = State::kBlock;
          block_scanned_ = 0;
        }
        continue;
      }
      case State::kContent: {
        const std::vector<std::string_view> markers =
            lenient ? std::vector<std::string_view>{kEos, kBlockStart, kBlockStartBare}
                    : std::vector<std::string_view>{kEos, kBlockStart};
        const Match m = find_first(buffer_, markers);
        if (m.pos == std::string::npos) {
          const size_t keep = final ? 0 : held_back(buffer_, markers);
          emit(delta, std::string_view(buffer_).substr(0, buffer_.size() - keep), false);
          buffer_.erase(0, buffer_.size() - keep);
          return;
        }
        emit(delta, std::string_view(buffer_).substr(0, m.pos), false);
        buffer_.erase(0, m.pos + m.marker.size());
        if (m.marker == kEos) {
          result_.saw_eos = true;
          state_ = State::kDone;
        } else {
          block_opener_ = m.marker;
          state_ = State::kBlock;
          block_scanned_ = 0;
        }
        continue;
      }
      case State::kBlock: {
        const size_t close = buffer_.find(kToolCallsClose, block_scanned_);
        if (close == std::string::npos) {
          if (buffer_.size() >= kToolCallsClose.size())
            block_scanned_ = buffer_.size() - kToolCallsClose.size() + 1;
          if (!final) return;
          if (!lenient) throw Error("tool-call block without </｜DSML｜tool_calls>");
          issue("unterminated tool-call block kept as content");
          emit(delta, block_opener_ + buffer_, false);
          buffer_.clear();
          state_ = State::kDone;
          return;
        }
        const std::string body = buffer_.substr(0, close);
        buffer_.erase(0, close + kToolCallsClose.size());
        close_block(delta, body, block_opener_ + body + std::string(kToolCallsClose));
        state_ = State::kAfterBlock;
        continue;
      }
      case State::kAfterBlock: {
        // §5 step 3: EOS must follow the block directly.
        if (buffer_.compare(0, kEos.size(), kEos) == 0) {
          buffer_.erase(0, kEos.size());
          result_.saw_eos = true;
          state_ = State::kDone;
          continue;
        }
        if (!final && kEos.substr(0, buffer_.size()) == buffer_) return;  // maybe EOS, still arriving
        if (buffer_.empty()) return;
        if (!lenient) throw Error("unexpected content after tool calls");
        after_block_ = true;
        state_ = State::kContent;
        continue;
      }
      case State::kDone:
        if (!buffer_.empty()) {
          if (!ignored_after_eos_) issue("text after the end of the output (EOS) was ignored");
          ignored_after_eos_ = true;
          buffer_.clear();
        }
        return;
    }
  }
}

ParseDelta CompletionParser::push(std::string_view text) {
  ParseDelta delta;
  buffer_ += text;
  run(delta, false);
  return delta;
}

ParseDelta CompletionParser::push_eos() { return push(kEos); }

ParseDelta CompletionParser::finish() {
  ParseDelta delta;
  const State before = state_;
  run(delta, true);
  // A block that closed right at the end passes, as in the official parser.
  if (!result_.saw_eos && state_ != State::kAfterBlock) {
    if (before == State::kReasoning || state_ == State::kReasoning)
      issue("missing </think>: the output ended inside the reasoning");
    else
      issue("missing EOS: the output was cut off");
  }
  // §5 step 5: no control token may survive inside the text fields.
  for (std::string_view tok : {kBos, kEos, kThinkStart, kThinkEnd, kDsml}) {
    if (result_.content.find(tok) != std::string::npos)
      issue(cat("content contains the special token '", tok, "'"));
    if (result_.reasoning_content.find(tok) != std::string::npos)
      issue(cat("reasoning contains the special token '", tok, "'"));
  }
  return delta;
}

ParsedCompletion parse_completion(std::string_view text, ThinkingMode mode, ParsePolicy policy) {
  CompletionParser p(mode, policy);
  p.push(text);
  p.finish();
  return p.result();
}

}  // namespace dsv4::chat
