// Shared pieces of `dsv4 generate` and `dsv4 chat` (see chat_turn.h): model loading, option
// parsing, and the streamed turn that ties the generation loop to the completion parser.
#include "cli/chat_turn.h"

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <random>
#include <string>

#include "cli/backend_args.h"
#include "cli/context_limit.h"
#include "cli/nonfinite.h"
#include "cli/progress.h"
#include "engine/backend.h"
#include "model/config.h"
#include "util/error.h"
#include "util/file_read.h"

namespace dsv4::cli {

LoadedModel load_model(const std::filesystem::path& dir, const Args& args) {
  const auto t0 = std::chrono::steady_clock::now();
  std::fprintf(stderr, "loading %s ...\n", dir.string().c_str());
  const BackendOptions opt = backend_options(args);
  require_regular_file(dir / "tokenizer.json");  // before the loader opens it (a FIFO would block)
  LoadedModel m{dir, Tokenizer::load(dir / "tokenizer.json"), make_forward(dir, opt)};
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "loaded in %.2f s: %lld layers, vocab %lld, %s backend, %s numerics\n", s,
               static_cast<long long>(m.forward->config().num_hidden_layers),
               static_cast<long long>(m.forward->config().vocab_size), to_string(opt.backend),
               to_string(opt.numerics));
  // Refused now rather than at the first request (the scheduler would refuse it there).
  if (args.has("--speculative") && args.get_int("--speculative", 0) > 0 && !m.forward->can_draft())
    fail("--speculative: ", dir.string(), " cannot draft on the ", to_string(opt.backend),
         " backend (it needs an MTP block, mtp.0.*, and a backend that drafts with it)");
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
    "  --logprobs N          with --json: each token's log-probability and the N most likely\n"
    "  --speculative K       draft K tokens per step with the model's MTP block and verify them\n"
    "                        in one step (0-3, default 0 = off; greedy output is unchanged)\n") +
    kBackendUsage;

}  // namespace

const char* const kGenerationUsage = kGenerationUsageText.c_str();

std::set<std::string> generation_value_options() {
  std::set<std::string> o = backend_value_options();
  o.insert({"--model", "--max-tokens", "--temp", "--top-p", "--top-k", "--min-p", "--seed",
            "--stop", "--logprobs", "--speculative"});
  return o;
}

GenerationOptions generation_options(const Args& args) {
  GenerationOptions o;
  // Any positive count: beyond what the context leaves it is capped (finish reason "length"),
  // context_limit.h.
  o.max_tokens = args.get_int("--max-tokens", kDefaultMaxTokens, 1, INT64_MAX);
  o.sampling.temperature = static_cast<float>(args.get_double("--temp", kDefaultTemperature));
  o.sampling.top_p = static_cast<float>(args.get_double("--top-p", 1.0));
  o.sampling.top_k = static_cast<int32_t>(args.get_int("--top-k", 0, 0, INT32_MAX));
  o.sampling.min_p = static_cast<float>(args.get_double("--min-p", 0.0));
  if (args.has("--seed")) {
    o.sampling.seed = static_cast<uint64_t>(args.get_int("--seed", 0, 0, INT64_MAX));
  } else {
    o.sampling.seed = std::random_device{}() & 0x7fffffff;
    if (o.sampling.temperature > 0.0f)
      std::fprintf(stderr, "seed %llu\n", static_cast<unsigned long long>(o.sampling.seed));
  }
  if (auto stop = args.get("--stop")) o.stop_strings.push_back(*stop);
  o.sampling.top_logprobs = static_cast<int32_t>(args.get_int("--logprobs", 0, 0, 100));
  o.speculative = static_cast<int>(args.get_int("--speculative", 0, 0, kMaxSpeculative));
  validate(o.sampling);
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

GenerationResult generate_reporting(Forward& forward, SequenceState& seq, const Tokenizer& tokenizer,
                                    std::span<const int32_t> prompt, size_t n_fresh,
                                    const GenerationOptions& options, GenerationCallbacks callbacks) {
  const std::span<const int32_t> held = prompt.first(prompt.size() - n_fresh), fresh = prompt.last(n_fresh);
  std::optional<ProgressLine> progress;
  const int64_t chunk = prefill_chunk(options, forward);
  if (int64_t(fresh.size()) > chunk) progress.emplace("prefill", int64_t(fresh.size()));
  callbacks.on_prefill = [&](int64_t done, int64_t) {
    if (progress) progress->update(done);
  };
  std::vector<int32_t> sampled;
  const auto on_token = callbacks.on_token;
  callbacks.on_token = [&](int32_t id) {
    sampled.push_back(id);
    if (on_token) on_token(id);
  };
  try {
    return generate(forward, seq, tokenizer, fresh, options, callbacks, held);
  } catch (const Error& e) {
    // Both backends' errors about non-finite logits name them ("logits contain nan", "non-finite
    // logits at position"): say where the first NaN or infinity came from.
    if (std::string_view(e.what()).find("logits") == std::string_view::npos) throw;
    std::vector<int32_t> fed(prompt.begin(), prompt.end());
    fed.insert(fed.end(), sampled.begin(), sampled.end());
    fail_with_nonfinite_origin(e.what(), forward, fed, chunk);
  }
}

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
  GenerationOptions fitted = options;  // the whole conversation and the answer share the context
  fitted.max_tokens = max_tokens_in_context(*model.forward, int64_t(prompt.size()), options.max_tokens);

  TurnResult r;
  r.generation = generate_reporting(*model.forward, seq, model.tokenizer, prompt, fresh.size(), fitted, cb);
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
  const SpeculativeCounts& c = g.speculative;
  if (c.verify_steps > 0)
    std::fprintf(stderr, "speculative: %lld of %lld drafts kept (%.1f %%), %.2f tokens per verifying step\n",
                 static_cast<long long>(c.accepted), static_cast<long long>(c.drafted), 100.0 * c.acceptance_rate(),
                 c.mean_accepted_length());
}

}  // namespace dsv4::cli
