// `dsv4 chat`: an interactive multi-turn conversation on stdin/stdout. Each turn re-encodes the
// whole history with the chat encoder and reuses the sequence's cached tokens when the new prompt
// extends them; /reset starts over, /exit (or end of input) quits. The turn itself is run_turn.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "chat/encoder.h"
#include "cli/chat_turn.h"
#include "cli/command.h"
#include "model/config.h"
#include "util/error.h"
#include "util/utf8.h"

namespace dsv4::cli {

namespace {

constexpr const char* kUsage =
    "usage: dsv4 chat [-m DIR] [options]\n"
    "  -m DIR                checkpoint folder with tokenizer.json (default: the embedded models/nano)\n"
    "  --system S            system message for the conversation\n"
    "  --thinking-mode M     thinking (default) or chat\n"
    "  --reasoning-effort E  original revision: high|max; 0731: low|high|max\n"
    "  --encoder-revision R  original (default) or 0731\n"
    "  --hide-reasoning      do not print the reasoning\n"
    "Type a message and press enter. /reset clears the conversation, /exit quits.\n";

int run_chat(const std::vector<std::string>& argv) {
  std::set<std::string> values = generation_value_options();
  values.insert({"--system", "--thinking-mode", "--reasoning-effort", "--encoder-revision"});
  const Args args(argv, values, {"--hide-reasoning", "--help"}, {{"-m", "--model"}, {"-h", "--help"}});
  if (args.has("--help")) {
    std::fprintf(stdout, "%s%s", kUsage, kGenerationUsage);
    return 0;
  }
  const chat::EncodeOptions enc = encode_options(args);
  const GenerationOptions gen = generation_options(args);
  LoadedModel model = load_model(resolve_model_dir(args), args);
  // One sequence for the whole conversation, as long as the context (context_limit.h): each turn
  // checks that the conversation fits and caps its answer to what is left.
  auto seq = model.forward->new_sequence(model.forward->kv_cache().max_context);

  std::vector<chat::Message> history;
  auto start = [&] {
    history.clear();
    if (auto system = args.get("--system")) {
      chat::Message m;
      m.role = chat::Role::kSystem;
      m.content = *system;
      m.has_content = true;
      history.push_back(std::move(m));
    }
  };
  start();
  std::vector<int32_t> held;  // ids the sequence holds
  std::fprintf(stderr, "dsv4 chat (%s mode): /reset clears, /exit quits\n", chat::to_string(enc.mode));
  std::string line;
  while (true) {
    std::fputs("> ", stderr);
    std::fflush(stderr);
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line == "/reset") {
      start();
      held.clear();
      seq->reset();
      std::fputs("(conversation cleared)\n", stderr);
      continue;
    }
    if (line.empty()) continue;
    if (!utf8::is_valid(line)) {
      std::fputs("error: the input is not valid UTF-8; message ignored\n", stderr);
      continue;
    }
    chat::Message user;
    user.role = chat::Role::kUser;
    user.content = line;
    user.has_content = true;
    history.push_back(user);
    const std::vector<int32_t> prompt = model.tokenizer.encode(chat::encode_messages(history, enc));
    TurnResult turn;
    try {
      turn = run_turn(model, *seq, held, prompt, enc.mode, gen, !args.has("--hide-reasoning"));
    } catch (const Error& e) {
      // The turn failed (e.g. the context is full): keep the session, drop the message.
      std::fprintf(stderr, "\nerror: %s\n", e.what());
      history.pop_back();
      held.clear();
      seq->reset();
      continue;
    }
    std::fputc('\n', stdout);
    std::fflush(stdout);
    for (const std::string& issue : turn.message.issues) std::fprintf(stderr, "note: %s\n", issue.c_str());
    print_stats(turn.generation);
    chat::Message reply;
    reply.role = chat::Role::kAssistant;
    reply.content = turn.message.content;
    reply.has_content = true;
    reply.reasoning_content = turn.message.reasoning_content;
    reply.tool_calls = turn.message.tool_calls;
    history.push_back(std::move(reply));
  }
  return 0;
}

}  // namespace

DSV4_COMMAND("chat", "interactive multi-turn chat (/reset, /exit)", run_chat);

}  // namespace dsv4::cli
