// `dsv4 generate`'s --temp, --top-k, --top-p and --min-p change what it generates: on a random tiny
// model with one --seed, --temp 1 gives other tokens than --temp 0, and each filter narrowed to a
// single token (--top-k 1, --top-p 1e-6, --min-p 0.9999999) turns that same seeded run back into the
// greedy one. The sampler's distributions are tests/engine's (sampler_test, sampling_flags_test).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/byte_tokenizer.h"
#include "support/run_command.h"
#include "support/seed.h"

namespace {

using nlohmann::json;

// Long enough that --temp 1 reproducing greedy is negligible (checked per run below).
constexpr int kTokens = 24;

// EOS is never the argmax (byte_tokenizer.h), so a greedy run is always kTokens long.
const std::filesystem::path& model_dir() {
  static const dsv4::test::ScratchDir dir = dsv4::test::write_tiny_chat_model({dsv4::test::kByteTokenizerEos});
  return dir.path();
}

// The --json summary of `dsv4 generate --raw` with `flags`; fails the test when it did not run.
json generate(const std::string& flags) {
  const std::string cmd = std::string(DSV4_BINARY) + " generate -m " + model_dir().string() +
                          " --raw -p abc --json --threads 2 --max-tokens " + std::to_string(kTokens) + " " +
                          flags + " 2>/dev/null";
  const dsv4::test::CommandResult r = dsv4::test::run_command(cmd);
  EXPECT_EQ(r.status, 0) << cmd;
  const size_t end = r.out.find_last_not_of('\n');
  const size_t start = r.out.rfind('\n', end);
  const size_t from = start == std::string::npos ? 0 : start + 1;
  return r.status == 0 ? json::parse(r.out.substr(from, end + 1 - from)) : json::object();
}

std::vector<int32_t> tokens_of(const json& j) { return j.value("tokens", std::vector<int32_t>{}); }

TEST(SamplingFlags, EachFlagChangesWhatGenerateDoes) {
  const json greedy = generate("--temp 0 --logprobs 2");
  const std::vector<int32_t> want = tokens_of(greedy);
  ASSERT_EQ(int(want.size()), kTokens) << greedy.dump();

  // Why --temp 1 cannot give greedy's tokens by chance: an unfiltered temperature-1 draw picks
  // token g with probability p(g) = softmax(logits)[g], the T = 1 probability "logprob" reports,
  // so a whole run equals greedy's with probability Π p(g_i | g_<i) = exp(Σ logprob_i), asserted
  // below 1e-9. --min-p 0.9999999 (a float: 1 − 1.2e-7) keeps only tokens within 1.2e-7 of the
  // top logit; greedy's top1 − top2 gaps must exceed that. Measured smallest gap of a run: 1e-3 to
  // 5e-2, so a run fails this precondition with p ≈ 1e-5 (tests/engine/sampling_flags_test.cpp).
  const double min_p = double(0.9999999f);
  double log_p_equal = 0, min_gap = INFINITY;
  for (const json& t : greedy.at("logprobs")) {
    log_p_equal += t.at("logprob").get<double>();
    min_gap = std::min(min_gap, t.at("top")[0][1].get<double>() - t.at("top")[1][1].get<double>());
  }
  std::printf("[sampling] greedy: P(--temp 1 repeats it) = exp(%.1f); smallest top1-top2 gap %.3g\n",
              log_p_equal, min_gap);
  ASSERT_LT(log_p_equal, std::log(1e-9));
  ASSERT_GT(min_gap, -std::log(min_p));

  const std::string seeded = "--temp 1 --seed " + std::to_string(dsv4::test::seed_for_this_test() & 0x7fffffff);
  EXPECT_NE(tokens_of(generate(seeded)), want) << "--temp 1 gave the greedy tokens";
  EXPECT_EQ(tokens_of(generate(seeded + " --top-k 1")), want) << "--top-k 1";
  EXPECT_EQ(tokens_of(generate(seeded + " --top-p 1e-6")), want) << "--top-p 1e-6";
  EXPECT_EQ(tokens_of(generate(seeded + " --min-p 0.9999999")), want) << "--min-p 0.9999999";
}

}  // namespace
