// Shared pieces of `dsv4 generate` and `dsv4 chat` (see chat_turn.h): model loading, option
// parsing, and the streamed turn that ties the generation loop to the completion parser.
#include "cli/chat_turn.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "cli/backend_args.h"
#include "engine/backend.h"
#include "model/config.h"
#include "util/error.h"

namespace dsv4::cli {

std::filesystem::path resolve_model_dir(const Args& args) {
  if (auto dir = args.get("--model")) return *dir;
  const auto embedded = std::filesystem::path(DSV4_SOURCE_DIR) / "models/nano";
  if (!std::filesystem::exists(embedded / "config.json"))
    fail("no model given (-m DIR) and the embedded model ", embedded.string(), " does not exist");
  return embedded;
}

LoadedModel load_model(const std::filesystem::path& dir, const Args& args) {
  const auto t0 = std::chrono::steady_clock::now();
  std::fprintf(stderr, "loading %s ...\n", dir.string().c_str());
  const BackendOptions opt = backend_options(args);
  LoadedModel m{dir, Tokenizer::load(dir / "tokenizer.json"), make_forward(dir, opt)};
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "loaded in %.2f s: %lld layers, vocab %lld, %s backend, %s numerics\n", s,
               static_cast<long long>(m.forward->config().num_hidden_layers),
               static_cast<long long>(m.forward->config().vocab_size), to_string(opt.backend),
               to_string(opt.numerics));
  return m;
}

namespace {

// The sampling lines, then the backend's (one text, so generate and chat print one string).
const std::string kGenerationUsageText = std::string(
    "  --max-tokens N        generated tokens at most (default 2048)\n"
    "  --temp T              temperature, 0 = greedy (default 0.6, the reference's)\n"
    "  --top-p P             nucleus mass in (0, 1] (default 1 = off)\n"
    "  --top-k K             keep the K most likely tokens (default 0 = off)\n"
    "  --min-p M             keep tokens with p >= M * p_max (default 0 = off)\n"
    "  --seed S              RNG seed (default: random, printed on stderr)\n"
    "  --stop STR            also stop before this text\n"
    "  --logprobs N          with --json: each token's log-probability and the N most likely\n") +
    kBackendUsage;

}  // namespace

const char* const kGenerationUsage = kGenerationUsageText.c_str();

std::set<std::string> generation_value_options() {
  std::set<std::string> o = backend_value_options();
  o.insert({"--model", "--max-tokens", "--temp", "--top-p", "--top-k", "--min-p", "--seed",
            "--stop", "--logprobs"});
  return o;
}

GenerationOptions generation_options(const Args& args) {
  GenerationOptions o;
  o.max_tokens = args.get_int("--max-tokens", kDefaultMaxTokens);
  o.sampling.temperature = static_cast<float>(args.get_double("--temp", kDefaultTemperature));
  o.sampling.top_p = static_cast<float>(args.get_double("--top-p", 1.0));
  const int64_t top_k = args.get_int("--top-k", 0);
  if (top_k < 0 || top_k > INT32_MAX) fail("--top-k must be in [0, 2^31), got ", top_k);
  o.sampling.top_k = static_cast<int32_t>(top_k);
  o.sampling.min_p = static_cast<float>(args.get_double("--min-p", 0.0));
  if (args.has("--seed")) {
    const int64_t seed = args.get_int("--seed", 0);
    if (seed < 0) fail("--seed must be >= 0, got ", seed);
    o.sampling.seed = static_cast<uint64_t>(seed);
  } else {
    o.sampling.seed = std::random_device{}() & 0x7fffffff;
    if (o.sampling.temperature > 0.0f)
      std::fprintf(stderr, "seed %llu\n", static_cast<unsigned long long>(o.sampling.seed));
  }
  if (auto stop = args.get("--stop")) o.stop_strings.push_back(*stop);
  const int64_t top_logprobs = args.get_int("--logprobs", 0);
  if (top_logprobs < 0 || top_logprobs > 100) fail("--logprobs must be in [0, 100], got ", top_logprobs);
  o.sampling.top_logprobs = static_cast<int32_t>(top_logprobs);
  validate(o.sampling);
  if (o.max_tokens < 1) fail("--max-tokens must be >= 1, got ", o.max_tokens);
  return o;
}

chat::EncodeOptions encode_options(const Args& args) {
  chat::EncodeOptions e;
  e.mode = chat::parse_thinking_mode(args.get_or("--thinking-mode", "thinking"));
  e.revision = chat::parse_encoder_revision(args.get_or("--encoder-revision", "original"));
  e.reasoning_effort = args.get_or("--reasoning-effort", "");
  chat::reasoning_effort_prefix(e.revision, e.reasoning_effort);  // validates the level now
  return e;
}

namespace {

// Reasoning goes to stderr, set apart from the answer on stdout (dim on a terminal).
class ReasoningPrinter {
 public:
  explicit ReasoningPrinter(bool show) : show_(show), tty_(isatty(fileno(stderr)) != 0) {}
  void text(const std::string& t) {
    if (!show_ || t.empty()) return;
    if (!open_) std::fputs(tty_ ? "\x1b[2m[reasoning]\n" : "[reasoning]\n", stderr);
    open_ = true;
    std::fwrite(t.data(), 1, t.size(), stderr);
    std::fflush(stderr);
  }
  void close() {
    if (!open_) return;
    std::fputs(tty_ ? "\n[/reasoning]\x1b[0m\n" : "\n[/reasoning]\n", stderr);
    std::fflush(stderr);
    open_ = false;
  }

 private:
  bool show_, tty_, open_ = false;
};

}  // namespace

TurnResult run_turn(LoadedModel& model, SequenceState& seq, std::vector<int32_t>& held,
                    const std::vector<int32_t>& prompt, chat::ThinkingMode mode,
                    const GenerationOptions& options, bool show_reasoning) {
  // Reuse the cached prefix only when the new prompt extends exactly what the sequence holds
  // (thinking mode re-renders history, so it often does not: encoding.md §3.4).
  std::span<const int32_t> fresh(prompt);
  const bool reuse = !held.empty() && held.size() < prompt.size() &&
                     std::equal(held.begin(), held.end(), prompt.begin());
  if (reuse) {
    fresh = fresh.subspan(held.size());
  } else {
    seq.reset();
    held.clear();
  }

  chat::CompletionParser parser(mode, chat::ParsePolicy::kLenient);
  ReasoningPrinter reasoning(show_reasoning);
  auto show = [&](const chat::ParseDelta& d) {
    reasoning.text(d.reasoning);
    if (!d.content.empty()) {
      reasoning.close();
      std::fwrite(d.content.data(), 1, d.content.size(), stdout);
      std::fflush(stdout);
    }
  };
  GenerationCallbacks cb;
  cb.on_text = [&](std::string_view t) { show(parser.push(t)); };
  const bool report_prefill = static_cast<int64_t>(fresh.size()) > options.prefill_chunk;
  cb.on_prefill = [&](int64_t done, int64_t total) {
    if (!report_prefill) return;
    std::fprintf(stderr, "\rprefill %lld/%lld tokens", static_cast<long long>(done),
                 static_cast<long long>(total));
    if (done == total) std::fputc('\n', stderr);
    std::fflush(stderr);
  };

  TurnResult r;
  r.generation = generate(*model.forward, seq, model.tokenizer, fresh, options, cb, held);
  held.insert(held.end(), r.generation.fed.begin(), r.generation.fed.end());
  if (r.generation.finish == FinishReason::kEos) show(parser.push_eos());
  show(parser.finish());
  reasoning.close();
  r.message = parser.result();
  return r;
}

void print_stats(const GenerationResult& g) {
  const double prefill_tps = g.prefill_seconds > 0 ? g.n_prompt / g.prefill_seconds : 0.0;
  const double decode_tps =
      g.decode_seconds > 0 ? static_cast<double>(g.tokens.size()) / g.decode_seconds : 0.0;
  std::fprintf(stderr, "%lld prompt + %zu generated tokens, prefill %.1f tok/s, decode %.1f tok/s, finish: %s\n",
               static_cast<long long>(g.n_prompt), g.tokens.size(), prefill_tps, decode_tps,
               to_string(g.finish));
}

}  // namespace dsv4::cli
