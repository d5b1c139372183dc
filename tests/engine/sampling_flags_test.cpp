// The sampling parameters act on generate(): on a random tiny model with one seed, temperature 1
// generates other tokens than greedy, and each filter narrowed to a single token (top-k 1, a tiny
// top-p, min-p near 1) turns that same seeded run back into greedy; a top-k 3 run only ever picks
// one of its step's 3 most likely tokens. The sampler's distributions themselves are sampler_test's;
// the CLI flags that fill these parameters are tests/cli/test_sampling_flags.cpp's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cpu/cpu_forward.h"
#include "engine/generation.h"
#include "support/byte_tokenizer.h"
#include "support/seed.h"
#include "tokenizer/tokenizer.h"

namespace dsv4 {
namespace {

// Long enough that temperature 1 reproducing greedy is negligible (checked per run below).
constexpr int64_t kTokens = 24;

class SamplingFlags : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // EOS is never the argmax (byte_tokenizer.h), so greedy always runs kTokens long.
    dir_ = new test::ScratchDir(test::write_tiny_chat_model({test::kByteTokenizerEos}));
    tokenizer_ = new Tokenizer(Tokenizer::from_json(test::byte_tokenizer_json().dump(), "byte tokenizer"));
    CpuOptions co;
    co.n_threads = 2;
    forward_ = make_cpu_forward(dir_->path(), co).release();
  }
  static void TearDownTestSuite() {
    delete forward_;
    delete tokenizer_;
    delete dir_;  // removes the checkpoint
  }

  static GenerationResult run(const SamplingParams& sampling) {
    const std::vector<int32_t> prompt = {test::kByteTokenizerBos, test::byte_token('a'),
                                         test::byte_token('b'), test::byte_token('c')};
    GenerationOptions o;
    o.max_tokens = kTokens;
    o.sampling = sampling;
    auto seq = forward_->new_sequence(int64_t(prompt.size()) + kTokens + 1);
    return generate(*forward_, *seq, *tokenizer_, prompt, o);
  }

  static test::ScratchDir* dir_;
  static Tokenizer* tokenizer_;
  static Forward* forward_;
};
test::ScratchDir* SamplingFlags::dir_ = nullptr;
Tokenizer* SamplingFlags::tokenizer_ = nullptr;
Forward* SamplingFlags::forward_ = nullptr;

TEST_F(SamplingFlags, TemperatureOneDiffersAndEachNarrowFilterGivesGreedy) {
  SamplingParams greedy_p;
  greedy_p.temperature = 0.0f;
  greedy_p.top_logprobs = 2;
  const GenerationResult greedy = run(greedy_p);
  ASSERT_EQ(int64_t(greedy.tokens.size()), kTokens) << "greedy stopped early (EOS cannot be its argmax)";
  ASSERT_EQ(greedy.logprobs.size(), greedy.tokens.size());

  // Why temperature 1 cannot give greedy's tokens by chance: an unfiltered temperature-1 draw picks
  // token g with probability p(g) = softmax(logits)[g], the T = 1 probability that logprob
  // reports, so a whole run equals greedy's with probability Π p(g_i | g_<i) = exp(Σ logprob_i).
  // Asserted below 1e-9 (measured on this model: e^-79 and e^-75), so a failure is not bad luck.
  // min-p near 1 keeps only tokens within −ln(kMinP) ≈ 1.2e-7 of the top logit; greedy's
  // top1 − top2 gaps must exceed that. Measured smallest gap of a run: 1e-3 to 5e-2, i.e. a gap
  // density near 0 of ~4 per unit per step, so a run fails this precondition with p ≈ 24·4·1.2e-7
  // ≈ 1e-5.
  constexpr float kMinP = 0.9999999f;
  double log_p_equal = 0;
  double min_gap = INFINITY;
  for (const SampleResult& s : greedy.logprobs) {
    log_p_equal += s.logprob;
    ASSERT_EQ(s.top.size(), 2u);
    ASSERT_EQ(s.top[0].id, s.id);
    min_gap = std::min(min_gap, double(s.top[0].logprob) - double(s.top[1].logprob));
  }
  std::printf("[sampling] greedy: P(temperature 1 repeats it) = exp(%.1f); smallest top1-top2 gap %.3g\n",
              log_p_equal, min_gap);
  ASSERT_LT(log_p_equal, std::log(1e-9));
  ASSERT_GT(min_gap, -std::log(double(kMinP)));

  SamplingParams hot;
  hot.temperature = 1.0f;
  hot.seed = test::seed_for_this_test();
  const GenerationResult sampled = run(hot);
  EXPECT_NE(sampled.tokens, greedy.tokens);

  SamplingParams top_k = hot, top_p = hot, min_p = hot;
  top_k.top_k = 1;
  top_p.top_p = 1e-6f;  // the most likely token alone has mass ≥ 1/264
  min_p.min_p = kMinP;
  EXPECT_EQ(run(top_k).tokens, greedy.tokens) << "top-k 1";
  EXPECT_EQ(run(top_p).tokens, greedy.tokens) << "top-p 1e-6";
  EXPECT_EQ(run(min_p).tokens, greedy.tokens) << "min-p " << kMinP;
}

// A top-k 3 run picks, at every step, one of the 3 most likely tokens of that step's logits (the
// full T = 1 distribution comes back as logprobs). Not by luck: had top-k been ignored, all draws
// would land in the top 3 with probability Π_i mass_i, mass_i = the top 3's share at step i
// (same prefixes), asserted below 1e-9 — so top-k acts for k > 1 too, not only as greedy.
TEST_F(SamplingFlags, TopKThreePicksAmongTheThreeMostLikely) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 3;
  p.seed = test::seed_for_this_test();
  p.top_logprobs = int32_t(test::kByteTokenizerVocab);
  const GenerationResult g = run(p);
  ASSERT_EQ(int64_t(g.tokens.size()), kTokens);
  ASSERT_EQ(g.logprobs.size(), g.tokens.size());
  double log_p_inside_anyway = 0;
  for (size_t i = 0; i < g.logprobs.size(); ++i) {
    const SampleResult& s = g.logprobs[i];
    ASSERT_EQ(int64_t(s.top.size()), test::kByteTokenizerVocab);
    int rank = 0;
    while (rank < int(s.top.size()) && s.top[size_t(rank)].id != s.id) ++rank;
    EXPECT_LT(rank, 3) << "step " << i << ": token " << s.id;
    log_p_inside_anyway += std::log(std::exp(double(s.top[0].logprob)) + std::exp(double(s.top[1].logprob)) +
                                    std::exp(double(s.top[2].logprob)));
  }
  std::printf("[sampling] top-k 3: P(unfiltered draws all in the top 3) = exp(%.1f)\n", log_p_inside_anyway);
  EXPECT_LT(log_p_inside_anyway, std::log(1e-9));
}

}  // namespace
}  // namespace dsv4
