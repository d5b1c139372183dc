// Chat messages as the encoder sees them: OpenAI-style JSON (roles, content parts, tool calls,
// tools) read and validated into typed structs. Rendering them is encoder.cpp's job.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chat/py_json.h"

namespace dsv4::chat {

enum class Role { kSystem, kUser, kAssistant, kTool, kDeveloper, kLatestReminder };
const char* to_string(Role r);

// Quick-instruction tasks (encoding.md §3.8); each renders as its own special token.
enum class Task { kAction, kQuery, kAuthority, kDomain, kTitle, kReadUrl };
const char* task_token(Task t);  // "<｜action｜>", ...

// One function call, OpenAI shape {id, type:"function", function:{name, arguments}}.
struct ToolCall {
  std::string id;         // may be empty (the parser leaves it to the server)
  std::string name;
  std::string arguments;  // JSON text of an object ("{}" when there are none)
};

struct Message {
  Role role = Role::kUser;
  std::string content;            // text; OpenAI content-part lists are joined (see messages.cpp)
  bool has_content = false;       // false when absent or null
  std::string reasoning_content;  // assistant; "reasoning" is accepted as an alias (vLLM)
  std::vector<ToolCall> tool_calls;
  std::string tool_call_id;       // tool
  Json tools;                     // OpenAI tool list on system/developer (null when absent)
  Json response_format;           // system/developer (null when absent)
  std::optional<Task> task;
  bool wo_eos = false;            // assistant prefix to be continued: no trailing EOS
};

// Reads one message object; errors name `where` ("messages[3]") and the field.
Message message_from_json(const Json& j, const std::string& where);
// Reads a message array.
std::vector<Message> messages_from_json(const Json& array, const std::string& where);

// A request file: either a message array, or {"messages": [...], "tools": [...]}. Request-level
// tools go onto the leading system/developer message, or onto a new empty system message at
// index 0 (the vLLM convention, encoding.md §3.1).
std::vector<Message> read_conversation(const Json& doc, const std::string& origin);

// Tool results (role tool) whose tool_call_id matches no call of the latest assistant message
// that made calls, one sentence each. The reference encoder renders them anyway (sorted first,
// encoding.md §3.2), so they are no error; `dsv4 encode` warns about them.
std::vector<std::string> unmatched_tool_results(std::span<const Message> messages);

// Back to OpenAI-style JSON (used to print parsed completions).
Json tool_calls_to_json(const std::vector<ToolCall>& calls);

}  // namespace dsv4::chat
