// The sampler against an independent computation of the filtered distribution (plain softmax,
// then each filter written out directly), and its draws against that distribution within binomial
// error bounds; greedy, logprobs, reproducibility and parameter errors. Logits are random, drawn
// from a fresh seed that is printed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "engine/sampler.h"
#include "support/seed.h"
#include "util/error.h"

namespace dsv4 {
namespace {

// Replayable: DSV4_TEST_SEED reproduces a run (support/seed.h prints it).
uint64_t fresh_seed() { return test::seed_for_this_test(); }

std::vector<float> random_logits(std::mt19937_64& rng, int n, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> l(n);
  for (float& x : l) x = d(rng);
  return l;
}

// The oracle: probabilities by id, zero for filtered-out tokens.
std::vector<double> oracle(const std::vector<float>& logits, const SamplingParams& p) {
  const size_t n = logits.size();
  std::vector<double> prob(n, 0.0);
  double mx = -INFINITY;
  for (float l : logits) mx = std::max<double>(mx, l);
  double z = 0.0;
  for (size_t i = 0; i < n; ++i) z += std::exp((logits[i] - mx) / p.temperature);
  for (size_t i = 0; i < n; ++i) prob[i] = std::exp((logits[i] - mx) / p.temperature) / z;
  std::vector<bool> keep(n, true);
  if (p.top_k > 0) {  // k largest logits (random normals: no ties)
    std::vector<float> sorted = logits;
    std::sort(sorted.rbegin(), sorted.rend());
    const float kth = sorted[std::min<size_t>(p.top_k, n) - 1];
    for (size_t i = 0; i < n; ++i) keep[i] = logits[i] >= kth;
  }
  // Renormalise over the survivors before the next filter, as HF does.
  auto renorm = [&] {
    double s = 0.0;
    for (size_t i = 0; i < n; ++i) s += keep[i] ? prob[i] : 0.0;
    for (size_t i = 0; i < n; ++i) prob[i] = keep[i] ? prob[i] / s : 0.0;
  };
  renorm();
  if (p.top_p < 1.0f) {
    // A token survives when the mass strictly above it is still below p.
    for (size_t i = 0; i < n; ++i) {
      if (!keep[i]) continue;
      double above = 0.0;
      for (size_t j = 0; j < n; ++j)
        if (keep[j] && prob[j] > prob[i]) above += prob[j];
      keep[i] = above < p.top_p;
    }
    renorm();
  }
  if (p.min_p > 0.0f) {
    const double pmax = *std::max_element(prob.begin(), prob.end());
    for (size_t i = 0; i < n; ++i) keep[i] = keep[i] && prob[i] >= p.min_p * pmax;
    renorm();
  }
  return prob;
}

TEST(Sampler, FilteredDistributionMatchesOracleAndDrawsFollowIt) {
  std::mt19937_64 rng(fresh_seed());
  const std::vector<SamplingParams> configs = {
      {1.0f, 0, 1.0f, 0.0f}, {0.6f, 0, 1.0f, 0.0f}, {1.3f, 7, 1.0f, 0.0f}, {0.8f, 0, 0.9f, 0.0f},
      {1.0f, 0, 1.0f, 0.05f}, {0.7f, 20, 0.8f, 0.02f}, {2.0f, 3, 0.5f, 0.0f}};
  for (SamplingParams p : configs) {
    const std::vector<float> logits = random_logits(rng, 40, 2.0f);
    p.seed = rng();
    Sampler s(p);
    const std::vector<double> want = oracle(logits, p);
    std::vector<double> got(logits.size(), 0.0);
    for (const TokenProb& t : s.filtered_distribution(logits)) got[t.id] = t.p;
    for (size_t i = 0; i < logits.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-12) << "id " << i << " T=" << p.temperature << " k=" << p.top_k
                                          << " p=" << p.top_p << " min_p=" << p.min_p;
    // Draws: each frequency within 5 binomial standard deviations (false-alarm odds ~6e-7 per
    // token), plus 1/N for the discreteness of a count.
    const int n_draws = 100000;
    std::vector<int> count(logits.size(), 0);
    for (int d = 0; d < n_draws; ++d) ++count[s.sample(logits).id];
    for (size_t i = 0; i < logits.size(); ++i) {
      const double f = static_cast<double>(count[i]) / n_draws;
      const double sigma = std::sqrt(want[i] * (1.0 - want[i]) / n_draws);
      EXPECT_LE(std::abs(f - want[i]), 5.0 * sigma + 1.0 / n_draws) << "id " << i;
      if (want[i] == 0.0) {
        EXPECT_EQ(count[i], 0) << "filtered token " << i << " was drawn";
      }
    }
  }
}

TEST(Sampler, GreedyIsArgmaxAndLogprobsAreLogSoftmax) {
  std::mt19937_64 rng(fresh_seed());
  for (int trial = 0; trial < 20; ++trial) {
    const std::vector<float> logits = random_logits(rng, 1000, 3.0f);
    SamplingParams p;
    p.temperature = 0.0f;
    p.top_logprobs = 5;
    Sampler s(p);
    const SampleResult r = s.sample(logits);
    const int32_t argmax = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(r.id, argmax);
    double z = 0.0;
    for (float l : logits) z += std::exp(static_cast<double>(l));
    // float output of a double computation: a few float ULPs of |logprob| (< 20 here).
    EXPECT_NEAR(r.logprob, logits[argmax] - std::log(z), 1e-5);
    ASSERT_EQ(r.top.size(), 5u);
    EXPECT_EQ(r.top[0].id, argmax);
    for (size_t i = 1; i < r.top.size(); ++i) EXPECT_GE(r.top[i - 1].logprob, r.top[i].logprob);
  }
  // Ties go to the lowest id.
  Sampler g({0.0f});
  EXPECT_EQ(g.sample(std::vector<float>{1.0f, 3.0f, 3.0f, -1.0f}).id, 1);
}

TEST(Sampler, SameSeedSameTokens) {
  std::mt19937_64 rng(fresh_seed());
  const std::vector<float> logits = random_logits(rng, 500, 1.0f);
  SamplingParams p{1.0f, 50, 0.95f, 0.0f, rng()};
  Sampler a(p), b(p);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(a.sample(logits).id, b.sample(logits).id);
}

TEST(Sampler, BadParametersAndLogitsAreErrors) {
  EXPECT_THROW(Sampler({-0.1f}), Error);
  EXPECT_THROW(Sampler({1.0f, -1}), Error);
  EXPECT_THROW(Sampler({1.0f, 0, 0.0f}), Error);
  EXPECT_THROW(Sampler({1.0f, 0, 1.5f}), Error);
  EXPECT_THROW(Sampler({1.0f, 0, 1.0f, 1.0f}), Error);
  Sampler s({1.0f});
  EXPECT_THROW(s.sample(std::vector<float>{0.0f, NAN}), Error);
  EXPECT_THROW(s.sample(std::vector<float>{-INFINITY, -INFINITY}), Error);
  EXPECT_THROW(s.sample(std::vector<float>{}), Error);
}

}  // namespace
}  // namespace dsv4
