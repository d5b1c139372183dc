// `dsv4 logits`: runs a token list through a backend in chunks and writes the logits of every
// position as float32 .npy [T, vocab] — the interface the parity checks drive. Tokenisation is
// not involved (the token list is JSON).
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/command.h"
#include "cpu/cpu_forward.h"
#include "model/config.h"
#include "util/error.h"
#include "util/npy.h"

namespace dsv4::cli {

namespace {

std::vector<int32_t> read_tokens(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open the token file");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  if (!j.is_array()) fail(path, ": expected a JSON array of token ids");
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_number_integer() || j[i].get<int64_t>() < 0 ||
        j[i].get<int64_t>() > INT32_MAX)
      fail(path, ": element ", i, " is not a non-negative token id");
    tokens.push_back(int32_t(j[i].get<int64_t>()));
  }
  if (tokens.empty()) fail(path, ": the token list is empty");
  return tokens;
}

int run_logits(const std::vector<std::string>& argv) {
  Args args(argv, {"--model", "--tokens", "--chunk", "--numerics", "--backend", "--out", "--threads"},
            {}, {{"-m", "--model"}, {"-o", "--out"}});
  const std::string model_dir = args.require("--model");
  const std::vector<int32_t> tokens = read_tokens(args.require("--tokens"));
  const std::string out = args.require("--out");
  const int64_t T = int64_t(tokens.size());
  const int64_t chunk = args.get_int("--chunk", T);
  if (chunk <= 0) fail("--chunk must be a positive number of tokens, got ", chunk);
  CpuOptions opt;
  if (!parse_numerics(args.get_or("--numerics", "exact"), &opt.numerics))
    fail("--numerics must be 'exact' or 'official', got '", args.get_or("--numerics", ""), "'");
  const int64_t threads = args.get_int("--threads", 0);
  if (threads < 0 || threads > 1024) fail("--threads must be in [0, 1024], got ", threads);
  opt.n_threads = int(threads);
  const std::string backend = args.get_or("--backend", "cpu");
  if (backend != "cpu") fail("--backend '", backend, "' is not available (this build: cpu)");

  auto fwd = make_cpu_forward(model_dir, opt);
  const int64_t V = fwd->config().vocab_size;
  // The whole [T, V] array is held before writing; refuse sizes no test or check needs.
  constexpr int64_t kMaxLogitsBytes = int64_t(16) << 30;
  if (T > kMaxLogitsBytes / int64_t(sizeof(float)) / V)
    fail("--tokens: ", T, " tokens × vocab ", V, " logits exceed the 16 GiB output limit");
  auto seq = fwd->new_sequence(T);
  std::vector<float> all(size_t(T * V)), part;
  for (int64_t p = 0; p < T; p += chunk) {
    const int64_t n = std::min(chunk, T - p);
    ForwardItem item;
    item.seq = seq.get();
    item.tokens = std::span<const int32_t>(tokens.data() + p, size_t(n));
    item.all_logits = true;
    item.logits = &part;
    std::span<ForwardItem> batch(&item, 1);
    fwd->forward(batch);
    std::copy(part.begin(), part.end(), all.begin() + p * V);
  }
  write_npy(out, all.data(), {T, V});
  std::fprintf(stderr, "dsv4 logits: %lld tokens, chunk %lld, %s numerics -> %s\n",
               (long long)T, (long long)chunk, to_string(opt.numerics), out.c_str());
  return 0;
}

}  // namespace

DSV4_COMMAND("logits", "write the logits of every position of a token list as .npy", run_logits);

}  // namespace dsv4::cli
