// `dsv4 encode`: a messages JSON file -> the exact prompt text of the V4 chat encoder, or its
// token ids. The encoder is src/chat/encoder.cpp; this file reads options and prints.
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "chat/encoder.h"
#include "cli/args.h"
#include "cli/chat_turn.h"
#include "cli/command.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/file_read.h"

namespace dsv4::cli {

namespace {

constexpr const char* kUsage =
    "usage: dsv4 encode --messages FILE.json [options]\n"
    "  --messages FILE       a JSON array of OpenAI-style messages, or {\"messages\": [...],\n"
    "                        \"tools\": [...]} ('-': stdin)\n"
    "  --thinking-mode M     thinking (default) or chat\n"
    "  --reasoning-effort E  original revision: high|max; 0731: low|high|max\n"
    "  --encoder-revision R  original (default) or 0731\n"
    "  --keep-reasoning      keep earlier turns' reasoning (drop_thinking off)\n"
    "  --ids                 print the token ids as a JSON array instead of the text\n"
    "  -m DIR                the tokenizer for --ids: DIR/tokenizer.json (default: models/nano)\n"
    "The text is printed exactly, without a trailing newline.\n";

constexpr uint64_t kMaxMessagesBytes = uint64_t(1) << 30;

std::string read_input(const std::string& path) {
  if (path != "-") return read_input_file(path, kMaxMessagesBytes);
  std::ostringstream buf;
  buf << std::cin.rdbuf();
  return buf.str();
}

int run_encode(const std::vector<std::string>& argv) {
  const Args args(argv, {"--messages", "--thinking-mode", "--reasoning-effort", "--encoder-revision", "--model"},
                  {"--ids", "--keep-reasoning", "--help"}, {{"-m", "--model"}, {"-h", "--help"}});
  if (args.has("--help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (args.has("--model") && !args.has("--ids")) fail("-m only selects the tokenizer for --ids");
  const std::string path = args.require("--messages");
  chat::EncodeOptions opt = encode_options(args);
  opt.drop_thinking = !args.has("--keep-reasoning");
  const std::vector<chat::Message> messages =
      chat::read_conversation(chat::parse_json(read_input(path), path), path);
  // Not an error (the reference renders them), but almost always a mistake in the request.
  for (const std::string& w : chat::unmatched_tool_results(messages))
    std::fprintf(stderr, "dsv4 encode: warning: %s\n", w.c_str());
  const std::string text = chat::encode_messages(messages, opt);
  if (!args.has("--ids")) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  const std::filesystem::path tokenizer_file = resolve_model_dir(args) / "tokenizer.json";
  require_regular_file(tokenizer_file);  // before the loader opens it (a FIFO would block)
  const Tokenizer tok = Tokenizer::load(tokenizer_file);
  std::string out = "[";
  const std::vector<int32_t> ids = tok.encode(text);
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  out += "]\n";
  std::fputs(out.c_str(), stdout);
  return 0;
}

}  // namespace

DSV4_COMMAND("encode", "render chat messages into the V4 prompt text (or token ids)", run_encode);

}  // namespace dsv4::cli
