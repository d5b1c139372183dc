// encode_messages (encoding.md §3): preprocessing (tool messages merged into user turns, results
// sorted into call order, history reasoning dropped), then one render per message plus the
// transition that primes the next turn. DSML text comes from dsml.cpp.
#include "chat/encoder.h"

#include <algorithm>
#include <map>

#include "chat/dsml.h"
#include "chat/special_tokens.h"
#include "util/error.h"
#include "util/utf8.h"

namespace dsv4::chat {

const char* to_string(ThinkingMode m) { return m == ThinkingMode::kChat ? "chat" : "thinking"; }

ThinkingMode parse_thinking_mode(std::string_view s) {
  if (s == "chat") return ThinkingMode::kChat;
  if (s == "thinking") return ThinkingMode::kThinking;
  fail("invalid thinking mode '", s, "' (expected thinking or chat)");
}

const char* to_string(EncoderRevision r) { return r == EncoderRevision::kOriginal ? "original" : "0731"; }

EncoderRevision parse_encoder_revision(std::string_view s) {
  if (s == "original") return EncoderRevision::kOriginal;
  if (s == "0731") return EncoderRevision::k0731;
  fail("invalid encoder revision '", s, "' (expected original or 0731)");
}

// §3.6, verbatim prompt data. "Absolute maximum" is the original's max and 0731's high.
static constexpr std::string_view kEffortAbsoluteMaximum =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, "
    "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left "
    "unchecked.\n\n";
static constexpr std::string_view kEffortBeyondMaximum =
    "Reasoning Effort: Beyond maximum — exhaustive, relentless, and uncompromising.\n"
    "You MUST reason with the utmost depth and rigor, leaving absolutely nothing to chance: "
    "exhaustively decompose the problem into its most fundamental components, trace every causal "
    "chain to its root, and resolve the underlying cause rather than any surface symptom.\n"
    "Do not stop reasoning until you have independently verified the solution from multiple angles "
    "and are certain that no assumption remains unchecked and no error remains undiscovered.\n\n";

std::string_view reasoning_effort_prefix(EncoderRevision revision, std::string_view effort) {
  if (revision == EncoderRevision::kOriginal) {
    if (effort.empty() || effort == "high") return "";
    if (effort == "max") return kEffortAbsoluteMaximum;
    fail("invalid reasoning effort '", effort, "' for encoder revision original (expected high or max)");
  }
  if (effort.empty() || effort == "low") return "";
  if (effort == "high") return kEffortAbsoluteMaximum;
  if (effort == "max") return kEffortBeyondMaximum;
  fail("invalid reasoning effort '", effort, "' for encoder revision 0731 (expected low, high or max)");
}

namespace {

// A user turn after preprocessing is a list of blocks (§3.2 step 1).
struct Block {
  bool tool_result = false;
  std::string text;         // text block: the text; tool result: its content
  std::string tool_use_id;  // tool result
};

struct Turn {
  const Message* msg;       // role, content, reasoning, tool calls, tools, task, wo_eos
  Role role;
  std::vector<Block> blocks;  // user turns only
  bool has_blocks = false;
  std::optional<Task> task;
};

// §3.2 step 1: tool messages become tool-result blocks of a user turn; a user message directly
// after a user turn (without a task) joins it.
std::vector<Turn> merge_tool_messages(std::span<const Message> messages) {
  std::vector<Turn> merged;
  for (const Message& m : messages) {
    const bool prev_user = !merged.empty() && merged.back().role == Role::kUser && merged.back().has_blocks;
    if (m.role == Role::kTool) {
      Block b{true, m.content, m.tool_call_id};
      if (prev_user) {
        merged.back().blocks.push_back(std::move(b));
      } else {
        Turn t{&m, Role::kUser, {std::move(b)}, true, std::nullopt};
        merged.push_back(std::move(t));
      }
    } else if (m.role == Role::kUser) {
      Block b{false, m.content, ""};
      if (prev_user && !merged.back().task) {
        merged.back().blocks.push_back(std::move(b));
      } else {
        Turn t{&m, Role::kUser, {std::move(b)}, true, m.task};
        merged.push_back(std::move(t));
      }
    } else {
      merged.push_back(Turn{&m, m.role, {}, false, m.task});
    }
  }
  return merged;
}

// §3.2 step 2: within a user turn, tool results follow the order of the latest assistant's calls;
// unknown ids sort as position 0; the sort is stable.
void sort_tool_results(std::vector<Turn>& turns) {
  std::map<std::string, size_t> order;
  for (Turn& t : turns) {
    if (t.role == Role::kAssistant && !t.msg->tool_calls.empty()) {
      order.clear();
      for (size_t i = 0; i < t.msg->tool_calls.size(); ++i)
        if (!t.msg->tool_calls[i].id.empty()) order[t.msg->tool_calls[i].id] = i;
    } else if (t.role == Role::kUser && t.has_blocks) {
      std::vector<Block> results;
      for (const Block& b : t.blocks)
        if (b.tool_result) results.push_back(b);
      if (results.size() <= 1 || order.empty()) continue;
      auto key = [&](const Block& b) {
        auto it = order.find(b.tool_use_id);
        return it == order.end() ? size_t{0} : it->second;
      };
      std::stable_sort(results.begin(), results.end(),
                       [&](const Block& a, const Block& b) { return key(a) < key(b); });
      size_t next = 0;
      for (Block& b : t.blocks)
        if (b.tool_result) b = results[next++];
    }
  }
}

int last_user_index(const std::vector<Turn>& turns) {
  for (int i = static_cast<int>(turns.size()) - 1; i >= 0; --i)
    if (turns[i].role == Role::kUser || turns[i].role == Role::kDeveloper) return i;
  return -1;
}

// §3.2 step 4: before the last user turn developer messages go; assistants stay (their reasoning
// is not rendered: see the thinking part below); everything from the last user turn on is kept.
std::vector<Turn> drop_history_reasoning(std::vector<Turn> turns) {
  const int last_user = last_user_index(turns);
  std::vector<Turn> kept;
  for (int i = 0; i < static_cast<int>(turns.size()); ++i) {
    Turn& t = turns[i];
    const bool always = t.role == Role::kUser || t.role == Role::kSystem ||
                        t.role == Role::kLatestReminder;
    if (always || i >= last_user || t.role == Role::kAssistant) kept.push_back(std::move(t));
  }
  return kept;
}

void append_tools_and_format(std::string& out, const Message& m) {
  if (py_truthy(m.tools)) {
    out += "\n\n";
    out += render_tools_block(m.tools);
  }
  if (py_truthy(m.response_format)) {
    out += "\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";
    out += py_json_dumps(m.response_format);
  }
}

}  // namespace

// Messages built in code (not read from JSON, which nlohmann already checks) may carry any bytes;
// the prompt must be UTF-8 for the tokenizer to see what the reference would.
static void check_utf8(std::span<const Message> messages) {
  auto check = [](const std::string& s, size_t i, const char* field) {
    if (!utf8::is_valid(s)) fail("messages[", i, "].", field, ": not valid UTF-8");
  };
  for (size_t i = 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    check(m.content, i, "content");
    check(m.reasoning_content, i, "reasoning_content");
    check(m.tool_call_id, i, "tool_call_id");
    for (const ToolCall& tc : m.tool_calls) {
      check(tc.id, i, "tool_calls.id");
      check(tc.name, i, "tool_calls.function.name");
      check(tc.arguments, i, "tool_calls.function.arguments");
    }
  }
}

// The reference renders every assistant tool call's arguments as DSML parameters and fails on
// arguments that are not the text of a JSON object (encoding_dsv4.py encode_arguments_to_dsml:
// json.loads, then the object's items); so does this encoder, rather than prompt with text the
// model never saw. Empty or absent arguments are not JSON either. (Python's json also reads NaN
// and Infinity, which JSON does not have; such arguments are refused here.)
static void check_tool_call_arguments(std::span<const Message> messages) {
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != Role::kAssistant) continue;
    for (size_t c = 0; c < messages[i].tool_calls.size(); ++c) {
      const std::string& a = messages[i].tool_calls[c].arguments;
      const std::string where = cat("messages[", i, "].tool_calls[", c, "].function.arguments");
      const Json j = Json::parse(a, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) {
        const std::string shown = a.size() > 60 ? a.substr(0, 57) + "..." : a;
        fail(where, ": not valid JSON ('", shown, "'); the reference encoder fails on it too");
      }
      if (!j.is_object()) fail(where, ": must be a JSON object, got ", j.type_name());
    }
  }
}

std::string encode_messages(std::span<const Message> messages, const EncodeOptions& options) {
  check_utf8(messages);
  check_tool_call_arguments(messages);
  const bool thinking = options.mode == ThinkingMode::kThinking;
  const std::string_view effort_prefix =
      reasoning_effort_prefix(options.revision, options.reasoning_effort);

  std::vector<Turn> turns = merge_tool_messages(messages);
  sort_tool_results(turns);

  // §3.2 step 3: tools anywhere keep all reasoning (agent loops stay append-only). Tools on a user
  // message were already lost in the merge, as in the reference.
  bool drop = options.drop_thinking;
  for (const Turn& t : turns)
    if (t.role != Role::kUser && py_truthy(t.msg->tools)) drop = false;
  if (thinking && drop) turns = drop_history_reasoning(std::move(turns));

  const int last_user = last_user_index(turns);
  std::string out = options.add_bos ? std::string(kBos) : std::string();

  for (int i = 0; i < static_cast<int>(turns.size()); ++i) {
    const Turn& t = turns[i];
    const Message& m = *t.msg;
    if (i == 0 && thinking) out += effort_prefix;

    switch (t.role) {
      case Role::kSystem:
        out += m.content;
        append_tools_and_format(out, m);
        break;
      case Role::kDeveloper:
        out += kUserToken;
        out += m.content;
        append_tools_and_format(out, m);
        break;
      case Role::kUser: {
        out += kUserToken;
        for (size_t b = 0; b < t.blocks.size(); ++b) {
          if (b) out += "\n\n";
          if (t.blocks[b].tool_result) {
            out += "<tool_result>";
            out += t.blocks[b].text;
            out += "</tool_result>";
          } else {
            out += t.blocks[b].text;
          }
        }
        break;
      }
      case Role::kLatestReminder:
        out += kLatestReminderToken;
        out += m.content;
        break;
      case Role::kAssistant: {
        // An answer to a task message never carries a thinking part (§3.8).
        const bool prev_task = i > 0 && turns[i - 1].task.has_value();
        if (thinking && !prev_task && (!drop || i > last_user)) {
          out += m.reasoning_content;
          out += kThinkEnd;
        }
        out += m.content;
        out += render_tool_calls(m.tool_calls);
        if (!m.wo_eos) out += kEos;
        break;
      }
      case Role::kTool:
        DSV4_CHECK_MSG(false, "tool messages are merged into user turns before rendering");
    }

    // §3.4: the transition. Only before an assistant or latest_reminder message, or at the end.
    const bool last = i + 1 == static_cast<int>(turns.size());
    if (!last && turns[i + 1].role != Role::kAssistant && turns[i + 1].role != Role::kLatestReminder)
      continue;
    if (t.task) {
      if (*t.task == Task::kAction) {
        out += kAssistantToken;
        out += thinking ? kThinkStart : kThinkEnd;
      }
      out += task_token(*t.task);
    } else if (t.role == Role::kUser || t.role == Role::kDeveloper) {
      out += kAssistantToken;
      out += thinking && (!drop || i >= last_user) ? kThinkStart : kThinkEnd;
    }
  }
  return out;
}

}  // namespace dsv4::chat
