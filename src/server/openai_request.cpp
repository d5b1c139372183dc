// Reading OpenAI request bodies (openai_request.h). Every key is dispatched by name; an unknown key
// is an "unsupported parameter" 400, and parameters whose only value we can honour (n = 1,
// penalties 0, echo false, ...) accept exactly that value. JSON null means "not given".
#include "server/openai_request.h"

#include <cmath>

#include "server/api_error.h"
#include "util/error.h"

namespace dsv4::server {

using chat::Json;

namespace {

// OpenAI's own caps: top_logprobs <= 20 (chat) and at most 4 stop sequences; we allow 16 stops
// (each is scanned per token by TextStream, so the list stays short).
constexpr int32_t kMaxTopLogprobs = 20;
constexpr size_t kMaxStopStrings = 16;

bool read_bool(const Json& j, const std::string& name) {
  if (!j.is_boolean()) bad_field(name, cat(name, ": expected a boolean, got ", j.type_name()));
  return j.get<bool>();
}

int64_t read_int(const Json& j, const std::string& name) {
  if (!j.is_number_integer()) bad_field(name, cat(name, ": expected an integer, got ", j.dump()));
  if (j.is_number_unsigned() && j.get<uint64_t>() > uint64_t(INT64_MAX))
    bad_field(name, cat(name, ": ", j.dump(), " is too large"));
  return j.get<int64_t>();
}

double read_number(const Json& j, const std::string& name) {
  if (!j.is_number()) bad_field(name, cat(name, ": expected a number, got ", j.type_name()));
  const double v = j.get<double>();
  if (!std::isfinite(v)) bad_field(name, cat(name, ": must be finite"));
  return v;
}

const std::string& read_string(const Json& j, const std::string& name) {
  if (!j.is_string()) bad_field(name, cat(name, ": expected a string, got ", j.type_name()));
  return j.get_ref<const std::string&>();
}

// A parameter we implement only at its neutral value: that value is fine, anything else is a 400.
void require_neutral(const Json& j, const std::string& name, bool neutral, const char* why) {
  if (!neutral) unsupported(name, cat(name, " = ", j.dump(), " is not supported (", why, ")"));
}

// Keys both endpoints read in the same way. Returns false when `key` is not one of them.
bool read_common(const std::string& key, const Json& v, GenerationRequest& g) {
  if (key == "model") {
    g.model = read_string(v, key);
  } else if (key == "stream") {
    g.stream = read_bool(v, key);
  } else if (key == "stream_options") {
    if (!v.is_object()) bad_field(key, "stream_options: expected an object");
    for (const auto& [k, x] : v.items()) {
      if (x.is_null()) continue;
      if (k == "include_usage") {
        g.include_usage = read_bool(x, "stream_options.include_usage");
      } else if (k == "continuous_usage_stats") {
        require_neutral(x, "stream_options.continuous_usage_stats", x == false,
                        "usage is reported once, at the end of the stream");
      } else {
        unsupported("stream_options." + k, cat("unsupported parameter 'stream_options.", k, "'"));
      }
    }
  } else if (key == "max_tokens" || key == "max_completion_tokens") {
    const int64_t n = read_int(v, key);
    if (n < 1) bad_field(key, cat(key, " must be >= 1, got ", n));
    if (g.max_tokens && *g.max_tokens != n)
      bad_field(key, cat("max_tokens and max_completion_tokens disagree (", *g.max_tokens, " vs ", n, ")"));
    g.max_tokens = n;
  } else if (key == "temperature") {
    const double t = read_number(v, key);
    if (t < 0.0) bad_field(key, cat("temperature must be >= 0, got ", t));
    g.sampling.temperature = float(t);
  } else if (key == "top_p") {
    const double p = read_number(v, key);
    if (!(p > 0.0 && p <= 1.0)) bad_field(key, cat("top_p must be in (0, 1], got ", p));
    g.sampling.top_p = float(p);
  } else if (key == "top_k") {
    const int64_t k = read_int(v, key);
    if (k < -1 || k > INT32_MAX) bad_field(key, cat("top_k must be >= 0 (or -1 for off), got ", k));
    g.sampling.top_k = k < 0 ? 0 : int32_t(k);  // vLLM spells "off" as -1
  } else if (key == "min_p") {
    const double p = read_number(v, key);
    if (!(p >= 0.0 && p < 1.0)) bad_field(key, cat("min_p must be in [0, 1), got ", p));
    g.sampling.min_p = float(p);
  } else if (key == "seed") {
    g.seed = uint64_t(read_int(v, key));  // negative seeds are valid too (two's complement)
  } else if (key == "stop") {
    if (v.is_string()) {
      g.stop = {v.get<std::string>()};
    } else if (v.is_array()) {
      for (size_t i = 0; i < v.size(); ++i) g.stop.push_back(read_string(v[i], cat("stop[", i, "]")));
    } else {
      bad_field(key, "stop: expected a string or a list of strings");
    }
    if (g.stop.size() > kMaxStopStrings)
      bad_field(key, cat("stop: at most ", kMaxStopStrings, " strings, got ", g.stop.size()));
    for (const std::string& s : g.stop)
      if (s.empty()) bad_field(key, "stop: an empty stop string would end every output at once");
  } else if (key == "stop_token_ids") {
    if (!v.is_array()) bad_field(key, "stop_token_ids: expected a list of token ids");
    for (size_t i = 0; i < v.size(); ++i) {
      const int64_t id = read_int(v[i], cat("stop_token_ids[", i, "]"));
      if (id < 0 || id > INT32_MAX) bad_field(key, cat("stop_token_ids[", i, "]: ", id, " is not a token id"));
      g.stop_token_ids.push_back(int32_t(id));
    }
  } else if (key == "ignore_eos") {
    g.ignore_eos = read_bool(v, key);
  } else if (key == "n") {
    require_neutral(v, key, v.is_number_integer() && v.get<int64_t>() == 1,
                    "one choice per request; send several requests");
  } else if (key == "presence_penalty" || key == "frequency_penalty") {
    require_neutral(v, key, v.is_number() && v.get<double>() == 0.0, "no penalties are implemented");
  } else if (key == "repetition_penalty") {
    require_neutral(v, key, v.is_number() && v.get<double>() == 1.0, "no penalties are implemented");
  } else if (key == "logit_bias") {
    require_neutral(v, key, v.is_object() && v.empty(), "logit biases are not implemented");
  } else if (key == "user") {
    read_string(v, key);  // an end-user id for the caller's records; it changes nothing here
  } else {
    return false;
  }
  return true;
}

void finish_common(GenerationRequest& g, const RequestDefaults& d, bool temperature_given) {
  if (g.model.empty()) bad_field("model", "model: missing (GET /v1/models lists the served name)");
  if (!temperature_given) g.sampling.temperature = d.temperature;
  g.sampling.top_logprobs = g.top_logprobs;
}

// The roles a client may send: the encoder's developer and latest_reminder roles belong to
// DeepSeek's internal pipelines (encoding.md §3.1), and its task/wo_eos fields likewise.
void check_message_fields(const Json& m, const std::string& where) {
  if (!m.is_object()) bad_field("messages", cat(where, ": expected a message object, got ", m.type_name()));
  if (!m.contains("role") || !m["role"].is_string()) bad_field("messages", cat(where, ".role: missing or not a string"));
  const std::string& role = m["role"].get_ref<const std::string&>();
  if (role != "system" && role != "user" && role != "assistant" && role != "tool")
    bad_field("messages", cat(where, ".role: '", role, "' is not one of system, user, assistant, tool"));
  for (const auto& [k, v] : m.items()) {
    const bool ok = k == "role" || k == "content" ||
                    (role == "assistant" && (k == "reasoning_content" || k == "reasoning" || k == "tool_calls")) ||
                    (role == "tool" && (k == "tool_call_id" || k == "name"));
    if (!ok && !v.is_null())
      unsupported("messages", cat(where, ".", k, " is not supported on a ", role, " message"));
  }
}

void check_tools(const Json& tools) {
  if (!tools.is_array()) bad_field("tools", "tools: expected a list");
  for (size_t i = 0; i < tools.size(); ++i) {
    const std::string where = cat("tools[", i, "]");
    const Json& t = tools[i];
    if (!t.is_object()) bad_field("tools", where + ": expected an object");
    if (!t.contains("type") || t["type"] != "function")
      unsupported("tools", where + ".type: only \"function\" tools exist");
    if (!t.contains("function") || !t["function"].is_object())
      bad_field("tools", where + ".function: missing or not an object");
    const Json& f = t["function"];
    if (!f.contains("name") || !f["name"].is_string() || f["name"].get_ref<const std::string&>().empty())
      bad_field("tools", where + ".function.name: missing or not a non-empty string");
  }
}

// Thinking on or off as vLLM and SGLang take it for DeepSeek-V4 (encoding.md §8): from
// chat_template_kwargs.thinking / enable_thinking, the hosted API's thinking.type, or
// reasoning_effort "none"; contradicting each other is a 400.
struct ModeVote {
  std::optional<bool> thinking;
  std::string source;
  void cast(bool value, const std::string& from) {
    if (thinking && *thinking != value)
      bad_field(from, cat(from, " asks for ", value ? "thinking" : "chat", " mode but ", source,
                          " asks for ", *thinking ? "thinking" : "chat"));
    thinking = value;
    source = from;
  }
};

}  // namespace

std::string encoder_effort(chat::EncoderRevision revision, const std::string& level,
                           const std::string& param) {
  const bool r0731 = revision == chat::EncoderRevision::k0731;
  if (level == "minimal" || level == "low") return r0731 ? "low" : "high";
  if (level == "medium" || level == "high" || level == "xhigh") return "high";
  if (level == "max" || level == "ultra") return "max";
  bad_field(param, cat(param, ": unknown reasoning effort '", level,
                       "' (expected none, minimal, low, medium, high, xhigh, max or ultra)"));
}

ChatRequest parse_chat_request(const Json& body, const RequestDefaults& d) {
  if (!body.is_object()) bad_field("", "the request body must be a JSON object");
  ChatRequest r;
  GenerationRequest& g = r.gen;
  bool temperature_given = false;
  const Json* messages = nullptr;
  const Json* tools = nullptr;
  std::string tool_choice = "auto";
  ModeVote mode;
  std::optional<std::string> effort;  // API level
  std::string effort_param;
  bool drop_thinking = true;
  auto set_effort = [&](const std::string& level, const std::string& param) {
    if (effort && *effort != level)
      bad_field(param, cat(param, " = '", level, "' contradicts ", effort_param, " = '", *effort, "'"));
    effort = level;
    effort_param = param;
  };

  for (const auto& [key, v] : body.items()) {
    if (v.is_null()) continue;
    if (key == "temperature") temperature_given = true;
    if (read_common(key, v, g)) continue;
    if (key == "messages") {
      messages = &v;
    } else if (key == "logprobs") {
      g.logprobs = read_bool(v, key);
    } else if (key == "top_logprobs") {
      const int64_t n = read_int(v, key);
      if (n < 0 || n > kMaxTopLogprobs) bad_field(key, cat("top_logprobs must be in [0, ", kMaxTopLogprobs, "], got ", n));
      g.top_logprobs = int32_t(n);
    } else if (key == "tools") {
      check_tools(v);
      tools = &v;
    } else if (key == "tool_choice") {
      if (v.is_string() && (v == "auto" || v == "none")) {
        tool_choice = v.get<std::string>();
      } else if ((v.is_string() && v == "required") || v.is_object()) {
        unsupported(key, cat("tool_choice ", v.dump(),
                             " is not supported (it needs constrained decoding); use \"auto\" or \"none\""));
      } else {
        bad_field(key, cat("tool_choice: expected \"auto\", \"none\", \"required\" or an object, got ", v.dump()));
      }
    } else if (key == "parallel_tool_calls") {
      require_neutral(v, key, v == true, "the model may always call several tools in one turn");
    } else if (key == "response_format") {
      require_neutral(v, key, v.is_object() && v.size() == 1 && v.contains("type") && v["type"] == "text",
                      "JSON output needs constrained decoding");
    } else if (key == "reasoning_effort") {
      const std::string& level = read_string(v, key);
      if (level == "none") mode.cast(false, key);
      else set_effort(level, key);
    } else if (key == "thinking") {
      if (!v.is_object() || !v.contains("type") || !v["type"].is_string())
        bad_field(key, "thinking: expected {\"type\": \"enabled\" | \"disabled\"}");
      for (const auto& [k, x] : v.items())
        if (k != "type") unsupported("thinking." + k, cat("unsupported parameter 'thinking.", k, "'"));
      const std::string& type = v["type"].get_ref<const std::string&>();
      if (type != "enabled" && type != "disabled")
        bad_field(key, cat("thinking.type must be \"enabled\" or \"disabled\", got \"", type, "\""));
      mode.cast(type == "enabled", "thinking.type");
    } else if (key == "chat_template_kwargs") {
      if (!v.is_object()) bad_field(key, "chat_template_kwargs: expected an object");
      for (const auto& [k, x] : v.items()) {
        const std::string name = "chat_template_kwargs." + k;
        if (x.is_null()) continue;
        if (k == "thinking" || k == "enable_thinking") {
          mode.cast(read_bool(x, name), name);
        } else if (k == "reasoning_effort") {
          const std::string& level = read_string(x, name);
          if (level == "none") mode.cast(false, name);
          else set_effort(level, name);
        } else if (k == "drop_thinking") {
          drop_thinking = read_bool(x, name);
        } else {
          unsupported(name, cat("unsupported parameter '", name,
                                "' (known: thinking, enable_thinking, reasoning_effort, drop_thinking)"));
        }
      }
    } else {
      unsupported(key, cat("unsupported parameter '", key, "'"));
    }
  }
  finish_common(g, d, temperature_given);
  if (g.top_logprobs > 0 && !g.logprobs)
    bad_field("top_logprobs", "top_logprobs needs logprobs: true");

  if (!messages) bad_field("messages", "messages: missing");
  if (!messages->is_array() || messages->empty()) bad_field("messages", "messages: expected a non-empty list");
  for (size_t i = 0; i < messages->size(); ++i) check_message_fields((*messages)[i], cat("messages[", i, "]"));
  const std::string last_role = messages->back()["role"].get<std::string>();
  if (last_role != "user" && last_role != "tool")
    bad_field("messages", cat("messages: the last message must be from the user or a tool (it is ",
                              last_role, "); continuing an assistant message is not supported"));

  Json doc = {{"messages", *messages}};
  r.tools = tools && !tools->empty() && tool_choice != "none";
  if (r.tools) doc["tools"] = *tools;
  try {
    r.messages = chat::read_conversation(doc, "request");
  } catch (const Error& e) {
    bad_field("messages", e.what());
  }

  r.encode.revision = d.revision;
  r.encode.mode = mode.thinking ? (*mode.thinking ? chat::ThinkingMode::kThinking : chat::ThinkingMode::kChat)
                                : d.thinking_mode;
  r.encode.reasoning_effort = effort ? encoder_effort(d.revision, *effort, effort_param) : d.reasoning_effort;
  r.encode.drop_thinking = drop_thinking;
  return r;
}

CompletionRequest parse_completion_request(const Json& body, const RequestDefaults& d) {
  if (!body.is_object()) bad_field("", "the request body must be a JSON object");
  CompletionRequest r;
  GenerationRequest& g = r.gen;
  bool temperature_given = false, prompt_given = false;
  for (const auto& [key, v] : body.items()) {
    if (v.is_null()) continue;
    if (key == "temperature") temperature_given = true;
    if (read_common(key, v, g)) continue;
    if (key == "prompt") {
      prompt_given = true;
      const Json* p = &v;
      if (v.is_array() && v.size() == 1 && v[0].is_string()) p = &v[0];  // a batch of one
      if (p->is_string()) {
        r.prompt = p->get<std::string>();
      } else if (p->is_array() && !p->empty() && (*p)[0].is_number_integer()) {
        r.prompt_is_ids = true;
        for (size_t i = 0; i < p->size(); ++i) {
          const int64_t id = read_int((*p)[i], cat("prompt[", i, "]"));
          if (id < 0 || id > INT32_MAX) bad_field(key, cat("prompt[", i, "]: ", id, " is not a token id"));
          r.prompt_ids.push_back(int32_t(id));
        }
      } else if (p->is_array() && !p->empty() && ((*p)[0].is_string() || (*p)[0].is_array())) {
        unsupported(key, "prompt: a list of several prompts is not supported; send one request per prompt");
      } else {
        bad_field(key, "prompt: expected a string or a list of token ids");
      }
    } else if (key == "logprobs") {
      const int64_t n = read_int(v, key);
      if (n < 0 || n > kMaxTopLogprobs) bad_field(key, cat("logprobs must be in [0, ", kMaxTopLogprobs, "], got ", n));
      g.logprobs = true;
      g.top_logprobs = int32_t(n);
    } else if (key == "echo") {
      require_neutral(v, key, v == false, "the prompt is not echoed");
    } else if (key == "suffix") {
      require_neutral(v, key, v.is_string() && v.get_ref<const std::string&>().empty(), "no fill-in-the-middle");
    } else if (key == "best_of") {
      require_neutral(v, key, v.is_number_integer() && v.get<int64_t>() == 1, "one candidate per request");
    } else {
      unsupported(key, cat("unsupported parameter '", key, "'"));
    }
  }
  finish_common(g, d, temperature_given);
  if (!prompt_given) bad_field("prompt", "prompt: missing");
  if (r.prompt_is_ids ? r.prompt_ids.empty() : r.prompt.empty())
    bad_field("prompt", "prompt: empty (there is nothing to continue from)");
  return r;
}

}  // namespace dsv4::server
