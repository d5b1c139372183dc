// `dsv4 generate`: one prompt -> one answer, streamed. The chat encoder frames the prompt (or
// --raw feeds the text as is); reasoning is shown on stderr, apart from the answer on stdout.
// Loading, sampling flags and the streamed turn are in chat_turn.cpp.
#include <cstdio>
#include <string>
#include <vector>

#include "chat/encoder.h"
#include "cli/chat_turn.h"
#include "cli/command.h"
#include "cli/context_limit.h"
#include "model/config.h"
#include "util/error.h"
#include "util/utf8.h"

namespace dsv4::cli {

namespace {

// [{"id": 5, "logprob": -0.1, "top": [[5, -0.1], [9, -2.3]]}, ...]
chat::Json logprobs_json(const GenerationResult& g) {
  chat::Json out = chat::Json::array();
  for (const SampleResult& s : g.logprobs) {
    chat::Json top = chat::Json::array();
    for (const TokenLogprob& t : s.top) top.push_back({t.id, t.logprob});
    out.push_back({{"id", s.id}, {"logprob", s.logprob}, {"top", top}});
  }
  return out;
}

constexpr const char* kUsage =
    "usage: dsv4 generate [-m DIR] -p TEXT [options]\n"
    "  -m DIR                checkpoint folder with tokenizer.json (default: the embedded models/nano)\n"
    "  -p, --prompt TEXT     the user message (or the raw text with --raw)\n"
    "  --system S            a system message before it\n"
    "  --thinking-mode M     thinking (default: reason first) or chat (answer directly)\n"
    "  --reasoning-effort E  original revision: high|max; 0731: low|high|max\n"
    "  --encoder-revision R  original (default) or 0731\n"
    "  --raw                 no chat encoder: tokenize TEXT as is and print the raw continuation\n"
    "  --hide-reasoning      do not print the reasoning\n"
    "  --json                after the answer, print a JSON line on stdout: the parsed message\n"
    "                        (or the raw text), token ids, finish reason and token counts\n";

int run_generate(const std::vector<std::string>& argv) {
  std::set<std::string> values = generation_value_options();
  values.insert({"--prompt", "--system", "--thinking-mode", "--reasoning-effort", "--encoder-revision"});
  const Args args(argv, values, {"--raw", "--hide-reasoning", "--json", "--help"},
                  {{"-m", "--model"}, {"-p", "--prompt"}, {"-h", "--help"}});
  if (args.has("--help")) {
    std::fprintf(stdout, "%s%s", kUsage, kGenerationUsage);
    return 0;
  }
  const std::string text = args.require("--prompt");
  if (!utf8::is_valid(text)) fail("--prompt: the text is not valid UTF-8");
  if (auto system = args.get("--system"); system && !utf8::is_valid(*system))
    fail("--system: the text is not valid UTF-8");
  const bool raw = args.has("--raw");
  if (raw && (args.has("--system") || args.has("--thinking-mode") || args.has("--reasoning-effort")))
    fail("--raw feeds the text as is: --system, --thinking-mode and --reasoning-effort do not apply");
  const chat::EncodeOptions enc = encode_options(args);
  GenerationOptions gen = generation_options(args);

  LoadedModel model = load_model(resolve_model_dir(args), args);
  std::string prompt_text;
  if (raw) {
    prompt_text = text;
  } else {
    std::vector<chat::Message> messages;
    if (auto system = args.get("--system")) {
      chat::Message m;
      m.role = chat::Role::kSystem;
      m.content = *system;
      m.has_content = true;
      messages.push_back(std::move(m));
    }
    chat::Message user;
    user.role = chat::Role::kUser;
    user.content = text;
    user.has_content = true;
    messages.push_back(std::move(user));
    prompt_text = chat::encode_messages(messages, enc);
  }
  const std::vector<int32_t> prompt = model.tokenizer.encode(prompt_text);
  if (prompt.empty()) fail("--prompt: the text encodes to no tokens");
  // Refused at once when the prompt does not fit; an answer past the context is cut ("length").
  gen.max_tokens = max_tokens_in_context(*model.forward, int64_t(prompt.size()), gen.max_tokens);
  auto seq = model.forward->new_sequence(static_cast<int64_t>(prompt.size()) + gen.max_tokens);

  GenerationResult g;
  if (raw) {
    GenerationCallbacks cb;
    cb.on_text = [](std::string_view t) {
      std::fwrite(t.data(), 1, t.size(), stdout);
      std::fflush(stdout);
    };
    g = generate_reporting(*model.forward, *seq, model.tokenizer, prompt, prompt.size(), gen, cb);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    if (args.has("--json")) {
      chat::Json j;
      j["text"] = g.text;
      j["tokens"] = g.tokens;
      j["finish_reason"] = to_string(g.finish);
      if (gen.sampling.top_logprobs > 0) j["logprobs"] = logprobs_json(g);
      j["usage"] = {{"prompt_tokens", g.n_prompt}, {"completion_tokens", g.tokens.size()}};
      std::fprintf(stdout, "%s\n", j.dump().c_str());
    }
  } else {
    std::vector<int32_t> held;
    TurnResult turn = run_turn(model, *seq, held, prompt, enc.mode, gen, !args.has("--hide-reasoning"));
    g = std::move(turn.generation);
    std::fputc('\n', stdout);
    std::fflush(stdout);  // the answer line before any note on stderr
    const chat::ParsedCompletion& msg = turn.message;
    if (!msg.tool_calls.empty() && !args.has("--json"))
      std::fprintf(stdout, "tool calls: %s\n", chat::tool_calls_to_json(msg.tool_calls).dump().c_str());
    for (const std::string& issue : msg.issues) std::fprintf(stderr, "note: %s\n", issue.c_str());
    if (args.has("--json")) {
      chat::Json j;
      j["role"] = "assistant";
      j["content"] = msg.content;
      j["reasoning_content"] = msg.reasoning_content;
      j["tool_calls"] = chat::tool_calls_to_json(msg.tool_calls);
      j["tokens"] = g.tokens;
      j["finish_reason"] = to_string(g.finish);
      if (gen.sampling.top_logprobs > 0) j["logprobs"] = logprobs_json(g);
      j["usage"] = {{"prompt_tokens", g.n_prompt}, {"completion_tokens", g.tokens.size()}};
      std::fprintf(stdout, "%s\n", j.dump().c_str());
    }
  }
  print_stats(g);
  return 0;
}

}  // namespace

DSV4_COMMAND("generate", "generate an answer to one prompt (chat-encoded, or --raw)", run_generate);

}  // namespace dsv4::cli
