// `dsv4 perplexity`: strided perplexity of a text file, defined as llama.cpp's `perplexity` tool
// defines it; the tokenizer (src/tokenizer) and the backend (engine/backend.h) do the work, this
// file only chunks, scores and prints. tools/nano/common.py strided_perplexity is the same
// definition in Python (the HF oracle side).
//
// Definition: the token stream is cut into floor(T / ctx) chunks of ctx tokens; each chunk is
// evaluated from an empty sequence with its first token replaced by BOS; only the second half is
// scored: the logits at positions first = ctx/2 .. ctx-2 predict tokens first+1 .. ctx-1, so every
// scored token sees at least ctx/2 tokens of context. PPL = exp(mean NLL over scored tokens).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/backend_args.h"
#include "cli/command.h"
#include "cli/context_limit.h"
#include "cli/model_dir.h"
#include "cli/nonfinite.h"
#include "engine/backend.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/file_read.h"
#include "util/utf8.h"

namespace dsv4::cli {

namespace {

constexpr const char* kUsage =
    "usage: dsv4 perplexity [-m DIR] --text-file F [--ctx N] [--chunks K] [--backend cpu|cuda]\n"
    "                       [--numerics exact|official|official-bf16] [--threads N]\n"
    "  -m DIR                checkpoint folder (config.json, safetensors, tokenizer.json;\n"
    "                        default: the embedded models/nano)\n"
    "  -f, --text-file F     UTF-8 text to score (e.g. models/nano/validation.txt)\n"
    "  -c, --ctx N           tokens per chunk (default 512, as llama.cpp); its second half is\n"
    "                        scored\n"
    "  --chunks K            score at most K chunks (default: all)\n";

constexpr int64_t kDefaultCtx = 512;  // llama.cpp's default n_ctx for perplexity
constexpr int64_t kMinCtx = 4;        // at least one scored token per chunk

constexpr uint64_t kMaxTextBytes = uint64_t(1) << 30;  // far above any evaluation text

// The text to score: a file (or a pipe) of UTF-8, as `generate` requires of its prompt.
std::string read_text(const std::string& path) {
  std::string text = read_input_file(path, kMaxTextBytes);
  if (const size_t valid = utf8::valid_prefix_length(text); valid != text.size())
    fail(path, ": not valid UTF-8 at byte ", valid, " (perplexity scores UTF-8 text)");
  return text;
}

// -log softmax(row)[target], in double: the row is up to vocab_size FP32 logits.
double token_nll(const float* row, int64_t vocab, int32_t target) {
  float mx = row[0];
  for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, row[v]);
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - double(mx));
  return double(mx) + std::log(sum) - double(row[target]);
}

int run_perplexity(const std::vector<std::string>& argv) {
  std::set<std::string> values = backend_value_options();
  values.insert({"--model", "--text-file", "--ctx", "--chunks"});
  const Args args(argv, values, {"--help"},
                  {{"-m", "--model"}, {"-f", "--text-file"}, {"-c", "--ctx"}, {"-h", "--help"}});
  if (args.has("--help")) {
    std::fprintf(stdout, "%s%s", kUsage, kBackendUsage);
    return 0;
  }
  const std::filesystem::path model_dir = resolve_model_dir(args);
  const std::string text_path = args.require("--text-file");
  const int64_t ctx = args.get_int("--ctx", kDefaultCtx, kMinCtx, int64_t(1) << 24);
  const int64_t max_chunks = args.get_int("--chunks", 0, 0, INT64_MAX);  // 0: all
  const BackendOptions opt = backend_options(args);

  require_regular_file(model_dir / "tokenizer.json");  // before the loader opens it
  const Tokenizer tok = Tokenizer::load(model_dir / "tokenizer.json");
  const std::vector<int32_t> tokens = tok.encode(read_text(text_path));
  int64_t n_chunks = int64_t(tokens.size()) / ctx;
  if (n_chunks == 0)
    fail(text_path, ": ", tokens.size(), " tokens is less than one chunk of --ctx ", ctx);
  if (max_chunks > 0) n_chunks = std::min(n_chunks, max_chunks);

  auto fwd = make_forward(model_dir, opt);
  check_fits_context(*fwd, ctx, "--ctx");
  const ModelConfig& cfg = fwd->config();
  const int64_t V = cfg.vocab_size;
  if (cfg.bos_token_id < 0 || cfg.bos_token_id >= V)
    fail(model_dir.string(), "/config.json: bos_token_id ", cfg.bos_token_id, " is outside the vocabulary");
  for (size_t i = 0; i < size_t(n_chunks * ctx); ++i)
    if (tokens[i] >= V)
      fail(text_path, ": token ", i, " has id ", tokens[i], ", outside the model's vocab_size ", V);
  std::fprintf(stderr,
               "dsv4 perplexity: %zu tokens, %lld chunks of %lld, %s backend, %s numerics\n",
               tokens.size(), (long long)n_chunks, (long long)ctx, to_string(opt.backend),
               to_string(opt.numerics));

  const int64_t first = ctx / 2;
  double nll = 0, nll2 = 0;
  int64_t scored = 0;
  double forward_s = 0;
  std::vector<float> logits;
  auto seq = fwd->new_sequence(ctx);
  for (int64_t c = 0; c < n_chunks; ++c) {
    std::vector<int32_t> chunk(tokens.begin() + c * ctx, tokens.begin() + (c + 1) * ctx);
    chunk[0] = int32_t(cfg.bos_token_id);
    seq->reset();
    ForwardItem item;
    item.seq = seq.get();
    item.tokens = chunk;
    item.all_logits = true;
    item.logits = &logits;
    const auto t0 = std::chrono::steady_clock::now();
    fwd->forward(std::span<ForwardItem>(&item, 1));
    forward_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    DSV4_CHECK(int64_t(logits.size()) == ctx * V);
    for (int64_t p = first; p < ctx - 1; ++p) {
      const double x = token_nll(logits.data() + p * V, V, chunk[p + 1]);
      if (!std::isfinite(x))  // a NaN would poison every later average: stop at the first
        fail_with_nonfinite_origin(cat("chunk ", c + 1, ": the loss at position ", p + 1, " (token ", c * ctx + p + 1,
                                       " of the text) is ", x, ": the logits at position ", p, " are not finite"),
                                   *fwd, chunk, ctx);
      nll += x;
      nll2 += x * x;
      ++scored;
    }
    std::fprintf(stderr, "[%lld]%.4f%s", (long long)(c + 1), std::exp(nll / double(scored)),
                 c + 1 == n_chunks ? "\n" : ",");
  }
  const double mean = nll / double(scored);
  const double ppl = std::exp(mean);
  // Standard error of the mean NLL, carried to PPL to first order (as llama.cpp reports it).
  const double var = std::max(0.0, nll2 / double(scored) - mean * mean);
  const double ppl_err = ppl * std::sqrt(var / double(std::max<int64_t>(scored - 1, 1)));
  const double tok_s = double(n_chunks * ctx) / forward_s;
  std::printf("perplexity: %.4f +/- %.4f\ntokens: %lld scored (%lld evaluated in %lld chunks of %lld)\n"
              "tokens/s: %.1f\n",
              ppl, ppl_err, (long long)scored, (long long)(n_chunks * ctx), (long long)n_chunks,
              (long long)ctx, tok_s);
  return 0;
}

}  // namespace

DSV4_COMMAND("perplexity", "strided perplexity of a text file (llama.cpp's definition)",
             run_perplexity);

}  // namespace dsv4::cli
