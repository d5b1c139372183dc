// Completion parser: the model's output text -> {reasoning_content, content, tool_calls}
// (encoding.md §5), fed incrementally as a server streams it. Rendering prompts is encoder.h.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "chat/encoder.h"
#include "chat/messages.h"

namespace dsv4::chat {

// kStrict is the official parser's contract: malformed output throws dsv4::Error naming what is
// wrong. kLenient never throws: it repairs what servers repair (unterminated reasoning, tool calls
// without </think>, whitespace inside DSML tags, non-JSON string="false" values) and turns
// everything else (a broken tool-call block, text after the calls) into content, recording each
// repair in `issues`.
enum class ParsePolicy { kStrict, kLenient };

struct ParsedCompletion {
  std::string reasoning_content;
  std::string content;
  std::vector<ToolCall> tool_calls;  // ids empty: the server names them
  bool saw_eos = false;              // false: the output was cut off (length stop)
  std::vector<std::string> issues;   // lenient repairs, each with its reason
};

// What one push adds: text is safe to show (no partial marker is ever emitted); tool calls come
// whole, when their block closes.
struct ParseDelta {
  std::string reasoning;
  std::string content;
  std::vector<ToolCall> tool_calls;
  bool empty() const { return reasoning.empty() && content.empty() && tool_calls.empty(); }
};

class CompletionParser {
 public:
  // In thinking mode the prompt ended in <think>, so the output starts inside the reasoning.
  CompletionParser(ThinkingMode mode, ParsePolicy policy);

  // Decoded output text (any split, but whole UTF-8 characters); may contain the EOS text.
  ParseDelta push(std::string_view text);
  ParseDelta push_eos();  // the EOS token was sampled (the same as pushing its text)
  ParseDelta finish();    // end of output: flushes held-back text and checks completeness

  const ParsedCompletion& result() const { return result_; }

 private:
  enum class State { kReasoning, kContent, kBlock, kAfterBlock, kDone };
  void run(ParseDelta& delta, bool final);
  void emit(ParseDelta& delta, std::string_view text, bool reasoning);
  void issue(std::string what);  // strict: throws dsv4::Error; lenient: records the repair
  void close_block(ParseDelta& delta, std::string_view body, std::string_view raw);

  ThinkingMode mode_;
  ParsePolicy policy_;
  State state_;
  std::string buffer_;        // text not yet consumed
  std::string block_opener_;  // the marker that opened the current tool-call block
  size_t block_scanned_ = 0;  // kBlock: buffer_ bytes already searched for the closing tag
  bool at_start_ = true;      // nothing consumed yet (a stray leading <think> is dropped)
  bool after_block_ = false;  // lenient: content after a tool-call block
  bool ignored_after_eos_ = false;
  ParsedCompletion result_;
};

// One-shot form of the official parse_message_from_completion_text: `text` is the whole output,
// normally ending in the EOS text.
ParsedCompletion parse_completion(std::string_view text, ThinkingMode mode, ParsePolicy policy);

// The arguments of a DSML tool-call block body (the text between "<｜DSML｜tool_calls" and
// "</｜DSML｜tool_calls>"). Throws dsv4::Error for malformed DSML; in lenient mode tolerates
// whitespace and records repairs in `issues`.
std::vector<ToolCall> parse_dsml_block(std::string_view body, ParsePolicy policy,
                                       std::vector<std::string>* issues);

}  // namespace dsv4::chat
