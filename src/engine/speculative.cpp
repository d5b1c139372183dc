// Speculative sampling (see speculative.h). Why the rule keeps the distribution: for a draft d ~ q,
// P(emit x at the first rejection-or-acceptance) = q(x)·min(1, p(x)/q(x)) + P(reject)·r(x) with
// r = max(0, p − q)/Σ max(0, p − q) and P(reject) = Σ max(0, q − p) = Σ max(0, p − q), which is
// min(q, p)(x) + max(0, p − q)(x) = p(x). Probabilities in double, as the sampler computes them.
#include "engine/speculative.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace dsv4 {

SpeculativeSampler::SpeculativeSampler(const SamplingParams& params)
    : params_(params), transforms_(params), rng_(params.seed) {}

std::vector<double> SpeculativeSampler::dense(std::span<const float> logits) const {
  std::vector<double> p(logits.size(), 0.0);
  for (const TokenProb& t : transforms_.filtered_distribution(logits)) p[size_t(t.id)] = t.p;
  return p;
}

int32_t SpeculativeSampler::draw(const std::vector<double>& weights, double total) {
  // u in [0, 1) from the top 53 bits, as Sampler draws.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * total;
  double cumulative = 0.0;
  int32_t last = -1;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] <= 0.0) continue;
    cumulative += weights[i];
    last = int32_t(i);
    if (u < cumulative) return last;
  }
  DSV4_CHECK_MSG(last >= 0, "speculative sampling: nothing to draw from");
  return last;  // rounding left u past the last cumulative sum
}

SampleResult SpeculativeSampler::scored(std::span<const float> logits, int32_t id) const {
  // The log-probabilities Sampler::sample reports, computed the same way (log_softmax of the raw
  // logits), so that a speculative run reports the same numbers as an ordinary one.
  SampleResult r;
  r.id = id;
  const float top = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - top);
  const double log_z = top + std::log(sum);
  r.logprob = static_cast<float>(logits[size_t(id)] - log_z);
  if (params_.top_logprobs > 0) {
    const int32_t k = std::min<int32_t>(params_.top_logprobs, static_cast<int32_t>(logits.size()));
    std::vector<int32_t> ids(logits.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
      return logits[size_t(a)] != logits[size_t(b)] ? logits[size_t(a)] > logits[size_t(b)] : a < b;
    });
    for (int32_t i = 0; i < k; ++i)
      r.top.push_back({ids[size_t(i)], static_cast<float>(logits[size_t(ids[size_t(i)])] - log_z)});
  }
  return r;
}

int32_t SpeculativeSampler::draw_draft(std::span<const float> draft_logits) {
  if (greedy()) return transforms_.filtered_distribution(draft_logits).front().id;
  const std::vector<double> q = dense(draft_logits);
  return draw(q, 1.0);
}

SampleResult SpeculativeSampler::sample(std::span<const float> logits) {
  if (greedy()) return scored(logits, transforms_.filtered_distribution(logits).front().id);
  return scored(logits, draw(dense(logits), 1.0));
}

Verdict SpeculativeSampler::verify(std::span<const float> target, std::span<const int32_t> drafts,
                                   std::span<const float> draft_logits) {
  const size_t k = drafts.size();
  DSV4_CHECK(!target.empty() && target.size() % (k + 1) == 0);
  const size_t V = target.size() / (k + 1);
  DSV4_CHECK(greedy() || draft_logits.size() == k * V);
  Verdict v;
  for (size_t i = 0; i < k; ++i) {
    const std::span<const float> row = target.subspan(i * V, V);
    const int32_t d = drafts[i];
    DSV4_CHECK(d >= 0 && size_t(d) < V);
    if (greedy()) {
      const int32_t best = transforms_.filtered_distribution(row).front().id;
      v.tokens.push_back(scored(row, best));
      if (best != d) return v;
      ++v.n_accepted;
      continue;
    }
    const std::vector<double> p = dense(row), q = dense(draft_logits.subspan(i * V, V));
    DSV4_CHECK_MSG(q[size_t(d)] > 0.0, "draft ", d, " has no probability under its own distribution");
    // Accept with probability min(1, p(d)/q(d)): u·q(d) < p(d) for u in [0, 1).
    const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    if (u * q[size_t(d)] < p[size_t(d)]) {
      v.tokens.push_back(scored(row, d));
      ++v.n_accepted;
      continue;
    }
    std::vector<double> residual(V);
    double total = 0.0;
    for (size_t x = 0; x < V; ++x) total += residual[x] = std::max(0.0, p[x] - q[x]);
    // A rejection has probability Σ max(0, p − q) = total; should rounding reject with a total of
    // 0 (p = q up to the last bits), p itself is the residual's limit.
    const int32_t id = total > 0.0 ? draw(residual, total) : draw(p, 1.0);
    v.tokens.push_back(scored(row, id));
    return v;
  }
  v.tokens.push_back(sample(target.subspan(k * V, V)));
  return v;
}

}  // namespace dsv4
