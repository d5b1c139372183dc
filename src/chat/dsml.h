// DSML, the V4 tool-call markup, in the prompt direction: the tool-schema block of a system or
// developer message (encoding.md §3.5) and an assistant's tool calls (§3.3, §3.7). Reading DSML
// back out of a completion is parser.cpp's job.
#pragma once

#include <span>
#include <string>

#include "chat/messages.h"

namespace dsv4::chat {

// The "## Tools ..." block for an OpenAI tool list (each entry's "function" object, one JSON
// line each). Ends with "\n".
std::string render_tools_block(const Json& tools);

// "\n\n<｜DSML｜tool_calls>\n" + invokes + "\n</｜DSML｜tool_calls>", or "" without calls.
std::string render_tool_calls(std::span<const ToolCall> calls);

// The parameter lines of one call (§3.7): string values raw with string="true", anything else as
// JSON with string="false". Empty or null arguments give no lines; text that is not JSON becomes
// one string parameter named "arguments" (the official fallback); JSON that is not an object
// throws dsv4::Error.
std::string render_dsml_parameters(const ToolCall& call);

}  // namespace dsv4::chat
