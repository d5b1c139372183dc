// Speculative sampling (Leviathan et al. 2023; Chen et al. 2023): which drafted tokens a request
// keeps once the main model has scored them, so that its output has exactly the distribution of
// ordinary sampling (sampler.h) — greedy verification is the temperature-0 case. The drafts come
// from Forward::draft (model/forward.h); the step that feeds and rolls back is scheduler.cpp's.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "engine/sampler.h"

namespace dsv4 {

// What one verification kept: the accepted drafts, then one token of the main model (the
// correction after a rejection, or the bonus token after the last draft).
struct Verdict {
  std::vector<SampleResult> tokens;  // n_accepted + 1 of them
  int64_t n_accepted = 0;
};

// One request's rule. p = the main model's distribution and q = the draft's, both through the
// request's sampling transforms (Sampler::filtered_distribution: temperature, top-k, top-p, min-p):
// draft d is accepted with probability min(1, p(d)/q(d)); at the first rejection the token is drawn
// from max(0, p − q) renormalised, and after k acceptances the bonus token from p. Then each token
// is distributed as p given the tokens before it. Greedy (temperature 0): p and q are point masses,
// so a draft is kept exactly when it is the main model's argmax, and no random number is drawn.
// The random numbers are the rule's own (seeded by SamplingParams::seed), not a Sampler's.
class SpeculativeSampler {
 public:
  explicit SpeculativeSampler(const SamplingParams& params);
  bool greedy() const { return params_.temperature == 0.0f; }

  // A token from p alone: the first token after a prefill, or a step that drafted nothing.
  SampleResult sample(std::span<const float> logits /* [V] */);
  // A draft from the draft logits through the same transforms (DraftItem::choose).
  int32_t draw_draft(std::span<const float> draft_logits /* [V] */);
  // target [k + 1, V]: row i is the main model's logits for the token after fed token i (the fed
  // tokens are the pending token and drafts[0 … k)); draft_logits [k, V] the logits each draft was
  // drawn from (unused when greedy).
  Verdict verify(std::span<const float> target, std::span<const int32_t> drafts,
                 std::span<const float> draft_logits);

 private:
  std::vector<double> dense(std::span<const float> logits) const;  // filtered p over all ids
  int32_t draw(const std::vector<double>& weights, double total);    // id with probability w/total
  SampleResult scored(std::span<const float> logits, int32_t id) const;

  SamplingParams params_;
  Sampler transforms_;  // only its filtered_distribution (no draws)
  std::mt19937_64 rng_;
};

}  // namespace dsv4
