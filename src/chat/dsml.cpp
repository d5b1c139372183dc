// DSML rendering for prompts (see dsml.h). The template texts are prompt data from the official
// encoder, reproduced byte for byte (encoding.md §3.5); parsing is in parser.cpp.
#include "chat/dsml.h"

#include "chat/special_tokens.h"
#include "util/error.h"

namespace dsv4::chat {

// encoding.md §3.5: the literal text around the schema lines. Every line ends in "\n".
static constexpr std::string_view kToolsHead =
    "## Tools\n"
    "\n"
    "You have access to a set of tools to help answer the user's question. You can invoke tools "
    "by writing a \"<｜DSML｜tool_calls>\" block like the following:\n"
    "\n"
    "<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME\">\n"
    "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>\n"
    "\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types "
    "(numbers, booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n"
    "\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning "
    "inside <think>...</think> BEFORE any tool calls or final response.\n"
    "\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n"
    "\n"
    "### Available Tool Schemas\n"
    "\n";
static constexpr std::string_view kToolsTail =
    "\n"
    "\n"
    "You MUST strictly follow the above defined tool name and parameter schemas to invoke tool "
    "calls.\n";

std::string render_tools_block(const Json& tools) {
  std::string out(kToolsHead);
  for (size_t i = 0; i < tools.size(); ++i) {
    if (i) out += '\n';
    out += py_json_dumps(tools[i].at("function"));  // the function object, without its wrapper
  }
  out += kToolsTail;
  return out;
}

static void append_parameter(std::string& out, const std::string& key, const Json& value) {
  out += '<';
  out += kDsml;
  out += "parameter name=\"";
  out += key;  // raw, as the reference writes it (no escaping inside DSML)
  if (value.is_string()) {
    out += "\" string=\"true\">";
    out += value.get_ref<const std::string&>();
  } else {
    out += "\" string=\"false\">";
    out += py_json_dumps(value);
  }
  out += "</";
  out += kDsml;
  out += "parameter>";
}

std::string render_dsml_parameters(const ToolCall& call) {
  std::string out;
  if (call.arguments.empty()) return out;
  Json args;
  try {
    args = Json::parse(call.arguments);
  } catch (const nlohmann::json::parse_error&) {
    append_parameter(out, "arguments", Json(call.arguments));
    return out;
  } catch (const nlohmann::json::exception& e) {
    // Python's json.loads would read such a number as inf, which no DSML value can carry.
    fail("tool call '", call.name, "': arguments are JSON the encoder cannot carry: ", e.what());
  }
  if (args.is_null()) return out;
  if (!args.is_object())
    fail("tool call '", call.name, "': arguments must be a JSON object, got ", args.type_name());
  bool first = true;
  for (const auto& [key, value] : args.items()) {
    if (!first) out += '\n';
    first = false;
    append_parameter(out, key, value);
  }
  return out;
}

std::string render_tool_calls(std::span<const ToolCall> calls) {
  if (calls.empty()) return "";
  std::string out = "\n\n";
  out += kToolCallsOpen;
  out += '\n';
  for (size_t i = 0; i < calls.size(); ++i) {
    if (i) out += '\n';
    out += kInvokeOpen;
    out += " name=\"";
    out += calls[i].name;
    out += "\">\n";
    out += render_dsml_parameters(calls[i]);
    out += '\n';
    out += kInvokeClose;
    out += '>';
  }
  out += '\n';
  out += kToolCallsClose;
  return out;
}

}  // namespace dsv4::chat
