// Reading OpenAI-style message JSON into chat::Message, with errors that name the message index
// and field. The rendering rules live in encoder.cpp and dsml.cpp.
#include "chat/messages.h"

#include <set>

#include "util/error.h"

namespace dsv4::chat {

const char* to_string(Role r) {
  switch (r) {
    case Role::kSystem: return "system";
    case Role::kUser: return "user";
    case Role::kAssistant: return "assistant";
    case Role::kTool: return "tool";
    case Role::kDeveloper: return "developer";
    case Role::kLatestReminder: return "latest_reminder";
  }
  return "?";
}

const char* task_token(Task t) {
  switch (t) {
    case Task::kAction: return "<｜action｜>";
    case Task::kQuery: return "<｜query｜>";
    case Task::kAuthority: return "<｜authority｜>";
    case Task::kDomain: return "<｜domain｜>";
    case Task::kTitle: return "<｜title｜>";
    case Task::kReadUrl: return "<｜read_url｜>";
  }
  return "";
}

static Role parse_role(const std::string& s, const std::string& where) {
  if (s == "system") return Role::kSystem;
  if (s == "user") return Role::kUser;
  if (s == "assistant") return Role::kAssistant;
  if (s == "tool") return Role::kTool;
  if (s == "developer") return Role::kDeveloper;
  if (s == "latest_reminder") return Role::kLatestReminder;
  fail(where, ".role: unknown role '", s,
       "' (expected system, user, assistant, tool, developer or latest_reminder)");
}

static Task parse_task(const std::string& s, const std::string& where) {
  if (s == "action") return Task::kAction;
  if (s == "query") return Task::kQuery;
  if (s == "authority") return Task::kAuthority;
  if (s == "domain") return Task::kDomain;
  if (s == "title") return Task::kTitle;
  if (s == "read_url") return Task::kReadUrl;
  fail(where, ".task: unknown task '", s,
       "' (expected action, query, authority, domain, title or read_url)");
}

static const std::string& require_string(const Json& j, const std::string& where) {
  if (!j.is_string()) fail(where, ": expected a string, got ", j.type_name());
  return j.get_ref<const std::string&>();
}

// Content is a string, null, or a list of OpenAI content parts. For a plain message the text
// parts are joined with "\n\n" (the separator the V4 vision encoder uses between user blocks);
// any other part type is refused, since this model has no image or audio input. For a tool
// result, non-text parts become "[Unsupported <type>]", as the reference writes them (§3.3).
static std::string read_content(const Json& c, const std::string& where, bool tool_result) {
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) fail(where, ": expected a string, null or a list of content parts, got ", c.type_name());
  std::string out;
  for (size_t i = 0; i < c.size(); ++i) {
    const std::string part_where = cat(where, "[", i, "]");
    const Json& part = c[i];
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      fail(part_where, ": expected an object with a string \"type\"");
    const std::string& type = part["type"].get_ref<const std::string&>();
    if (i) out += "\n\n";
    if (type == "text") {
      if (!part.contains("text")) fail(part_where, ".text: missing");
      out += require_string(part["text"], part_where + ".text");
    } else if (tool_result) {
      out += cat("[Unsupported ", type, "]");
    } else {
      fail(part_where, ".type: content part '", type, "' is not supported (text only)");
    }
  }
  return out;
}

static ToolCall read_tool_call(const Json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": expected an object, got ", j.type_name());
  ToolCall tc;
  if (j.contains("id") && !j["id"].is_null()) tc.id = require_string(j["id"], where + ".id");
  if (!j.contains("function") || !j["function"].is_object())
    fail(where, ".function: missing or not an object");
  const Json& f = j["function"];
  if (!f.contains("name")) fail(where, ".function.name: missing");
  tc.name = require_string(f["name"], where + ".function.name");
  if (tc.id.empty() && f.contains("id") && f["id"].is_string()) tc.id = f["id"].get<std::string>();
  if (f.contains("arguments")) {
    const Json& a = f["arguments"];
    if (a.is_string()) tc.arguments = a.get<std::string>();
    else if (a.is_object()) tc.arguments = a.dump();  // ordered: keys keep their order
    else if (!a.is_null())
      fail(where, ".function.arguments: expected a JSON object or its text, got ", a.type_name());
  }
  return tc;
}

Message message_from_json(const Json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": expected a message object, got ", j.type_name());
  if (!j.contains("role")) fail(where, ".role: missing");
  Message m;
  m.role = parse_role(require_string(j["role"], where + ".role"), where);
  if (j.contains("content") && !j["content"].is_null()) {
    m.content = read_content(j["content"], where + ".content", m.role == Role::kTool);
    m.has_content = true;
  } else if (m.role == Role::kUser && j.contains("content")) {
    // The reference encoder joins a user message's text and fails on null (a missing key it
    // reads as ""); refuse it with a name instead.
    fail(where, ".content: null; a user message needs text (a string or content parts)");
  }
  for (const char* key : {"reasoning_content", "reasoning"}) {
    if (j.contains(key) && !j[key].is_null()) {
      m.reasoning_content = require_string(j[key], cat(where, ".", key));
      break;
    }
  }
  if (j.contains("tool_calls") && !j["tool_calls"].is_null()) {
    const Json& calls = j["tool_calls"];
    if (!calls.is_array()) fail(where, ".tool_calls: expected an array");
    for (size_t i = 0; i < calls.size(); ++i)
      m.tool_calls.push_back(read_tool_call(calls[i], cat(where, ".tool_calls[", i, "]")));
  }
  if (j.contains("tool_call_id") && !j["tool_call_id"].is_null())
    m.tool_call_id = require_string(j["tool_call_id"], where + ".tool_call_id");
  if (j.contains("tools") && !j["tools"].is_null()) {
    const Json& tools = j["tools"];
    if (!tools.is_array()) fail(where, ".tools: expected an array");
    for (size_t i = 0; i < tools.size(); ++i) {
      if (!tools[i].is_object() || !tools[i].contains("function") || !tools[i]["function"].is_object())
        fail(where, ".tools[", i, "].function: missing or not an object");
    }
    m.tools = tools;
  }
  if (j.contains("response_format") && !j["response_format"].is_null())
    m.response_format = j["response_format"];
  if (j.contains("task") && !j["task"].is_null())
    m.task = parse_task(require_string(j["task"], where + ".task"), where);
  if (j.contains("wo_eos") && !j["wo_eos"].is_null()) {
    if (!j["wo_eos"].is_boolean()) fail(where, ".wo_eos: expected a boolean");
    m.wo_eos = j["wo_eos"].get<bool>();
  }
  if (m.role == Role::kDeveloper && m.content.empty())
    fail(where, ".content: a developer message needs non-empty content");
  if (m.role == Role::kLatestReminder && !m.has_content)
    fail(where, ".content: a latest_reminder message needs content");
  return m;
}

std::vector<std::string> unmatched_tool_results(std::span<const Message> messages) {
  std::vector<std::string> out;
  std::set<std::string> calls;  // ids of the latest assistant message that made calls
  bool seen_calls = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    if (m.role == Role::kAssistant && !m.tool_calls.empty()) {
      calls.clear();
      for (const ToolCall& tc : m.tool_calls) calls.insert(tc.id);
      seen_calls = true;
    } else if (m.role == Role::kTool && !calls.count(m.tool_call_id)) {
      out.push_back(seen_calls ? cat("messages[", i, "]: a tool result for call id '", m.tool_call_id,
                                     "', which the latest assistant tool calls do not contain")
                               : cat("messages[", i, "]: a tool result before any assistant tool call"));
    }
  }
  return out;
}

std::vector<Message> messages_from_json(const Json& array, const std::string& where) {
  if (!array.is_array()) fail(where, ": expected an array of messages, got ", array.type_name());
  std::vector<Message> out;
  out.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i)
    out.push_back(message_from_json(array[i], cat(where, "[", i, "]")));
  return out;
}

std::vector<Message> read_conversation(const Json& doc, const std::string& origin) {
  if (doc.is_array()) return messages_from_json(doc, origin + ": messages");
  if (!doc.is_object() || !doc.contains("messages"))
    fail(origin, ": expected a message array or an object with \"messages\"");
  std::vector<Message> messages = messages_from_json(doc["messages"], origin + ": messages");
  if (doc.contains("tools") && !doc["tools"].is_null()) {
    Message carrier;
    carrier.role = Role::kSystem;
    carrier.tools = doc["tools"];
    // Validate the request-level list the same way as a message's own.
    Json probe = {{"role", "system"}, {"tools", doc["tools"]}};
    message_from_json(probe, origin + ": request");
    if (!messages.empty() &&
        (messages[0].role == Role::kSystem || messages[0].role == Role::kDeveloper)) {
      messages[0].tools = doc["tools"];
    } else {
      messages.insert(messages.begin(), std::move(carrier));
    }
  }
  return messages;
}

Json tool_calls_to_json(const std::vector<ToolCall>& calls) {
  Json out = Json::array();
  for (const ToolCall& tc : calls) {
    Json j;
    if (!tc.id.empty()) j["id"] = tc.id;
    j["type"] = "function";
    j["function"] = {{"name", tc.name}, {"arguments", tc.arguments}};
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace dsv4::chat
