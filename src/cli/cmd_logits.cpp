// `dsv4 logits`: runs a token list through a backend in chunks and writes the logits of every
// position as float32 .npy [T, vocab] — the interface the parity checks drive. Tokenisation is
// not involved (the token list is JSON).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/backend_args.h"
#include "cli/command.h"
#include "cli/context_limit.h"
#include "cli/model_dir.h"
#include "cli/nonfinite.h"
#include "cli/progress.h"
#include "cli/token_file.h"
#include "engine/backend.h"
#include "model/config.h"
#include "util/error.h"
#include "util/npy.h"

namespace dsv4::cli {

namespace {

constexpr const char* kUsage =
    "usage: dsv4 logits [-m DIR] --tokens FILE --out OUT.npy [--chunk N] [options]\n"
    "  -m DIR                checkpoint folder (config.json, safetensors; default: the embedded\n"
    "                        models/nano)\n"
    "  --tokens FILE         JSON array of token ids\n"
    "  -o, --out OUT.npy     float32 [T, vocab]: the logits of every position\n"
    "  --chunk N             tokens per forward call (default: all, in calls of at most 4096 with\n"
    "                        a progress line between them; 1 = pure decode)\n";

// Tokens per forward call when --chunk is not given: long lists are fed in pieces so that a
// progress line can be printed between them (the backends give the same logits for any chunking,
// design.md "Key seams").
constexpr int64_t kDefaultChunk = 4096;

int run_logits(const std::vector<std::string>& argv) {
  std::set<std::string> values = backend_value_options();
  values.insert({"--model", "--tokens", "--chunk", "--out"});
  const Args args(argv, values, {"--help"}, {{"-m", "--model"}, {"-o", "--out"}, {"-h", "--help"}});
  if (args.has("--help")) {
    std::fprintf(stdout, "%s%s", kUsage, kBackendUsage);
    return 0;
  }
  const std::filesystem::path model_dir = resolve_model_dir(args);
  const int64_t chunk_option = args.get_int("--chunk", 0, 1, INT64_MAX);  // 0: not given
  const BackendOptions opt = backend_options(args);
  const std::vector<int32_t> tokens = read_token_file(args.require("--tokens"));
  const std::string out = args.require("--out");
  const int64_t T = int64_t(tokens.size());
  const int64_t chunk = chunk_option > 0 ? chunk_option : std::min(T, kDefaultChunk);

  auto fwd = make_forward(model_dir, opt);
  check_fits_context(*fwd, T, "--tokens");
  const int64_t V = fwd->config().vocab_size;
  // The whole [T, V] array is held before writing; refuse sizes no test or check needs.
  constexpr int64_t kMaxLogitsBytes = int64_t(16) << 30;
  if (T > kMaxLogitsBytes / int64_t(sizeof(float)) / V)
    fail("--tokens: ", T, " tokens × vocab ", V, " logits exceed the 16 GiB output limit");
  auto seq = fwd->new_sequence(T);
  std::vector<float> all(size_t(T * V)), part;
  std::optional<ProgressLine> progress;
  if (T > chunk) progress.emplace("logits", T);
  for (int64_t p = 0; p < T; p += chunk) {
    const int64_t n = std::min(chunk, T - p);
    ForwardItem item;
    item.seq = seq.get();
    item.tokens = std::span<const int32_t>(tokens.data() + p, size_t(n));
    item.all_logits = true;
    item.logits = &part;
    std::span<ForwardItem> batch(&item, 1);
    fwd->forward(batch);
    // A NaN or infinity would go into the file unnoticed: refuse it, saying where it began.
    const auto bad = std::find_if(part.begin(), part.end(), [](float v) { return !std::isfinite(v); });
    if (bad != part.end()) {
      const int64_t at = bad - part.begin();
      fail_with_nonfinite_origin(cat("the logits at position ", p + at / V, " are not finite (", *bad, " at token id ",
                                     at % V, ")"),
                                 *fwd, std::span<const int32_t>(tokens).first(size_t(p + n)), chunk);
    }
    std::copy(part.begin(), part.end(), all.begin() + p * V);
    if (progress) progress->update(p + n);
  }
  write_npy(out, all.data(), {T, V});
  std::fprintf(stderr, "dsv4 logits: %lld tokens, chunk %lld, %s backend, %s numerics -> %s\n",
               (long long)T, (long long)chunk, to_string(opt.backend), to_string(opt.numerics),
               out.c_str());
  return 0;
}

}  // namespace

DSV4_COMMAND("logits", "write the logits of every position of a token list as .npy", run_logits);

}  // namespace dsv4::cli
