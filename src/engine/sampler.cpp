// Sampler (see sampler.h). Probabilities are computed in double: the vocabulary has ~129k entries
// and top-p sums are compared against p, where float accumulation error would shift the cut.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "util/error.h"

namespace dsv4 {

void validate(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
    fail("temperature must be a finite number >= 0, got ", p.temperature);
  if (p.top_k < 0) fail("top-k must be >= 0, got ", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) fail("top-p must be in (0, 1], got ", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p < 1.0f)) fail("min-p must be in [0, 1), got ", p.min_p);
  if (p.top_logprobs < 0) fail("top-logprobs must be >= 0, got ", p.top_logprobs);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) { validate(params); }

static void check_logits(std::span<const float> logits) {
  if (logits.empty()) fail("empty logits row");
  for (size_t i = 0; i < logits.size(); ++i)
    if (std::isnan(logits[i]) || logits[i] == std::numeric_limits<float>::infinity())
      fail("logits contain ", logits[i], " at token id ", i);
  if (*std::max_element(logits.begin(), logits.end()) == -std::numeric_limits<float>::infinity())
    fail("every logit is -inf: no token can be sampled");
}

std::vector<TokenProb> Sampler::filtered_distribution(std::span<const float> logits) const {
  check_logits(logits);
  const int32_t n = static_cast<int32_t>(logits.size());
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  auto more_likely = [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  };
  if (params_.temperature == 0.0f) return {{*std::min_element(order.begin(), order.end(), more_likely), 1.0}};
  int32_t kept = n;
  if (params_.top_k > 0 && params_.top_k < n) {
    kept = params_.top_k;
    std::partial_sort(order.begin(), order.begin() + kept, order.end(), more_likely);
  } else {
    std::sort(order.begin(), order.end(), more_likely);
  }
  // Softmax of logits / T over the survivors (order[0] is the largest).
  const double inv_t = 1.0 / params_.temperature;
  const double top = logits[order[0]];
  std::vector<double> prob(kept);
  double total = 0.0;
  for (int32_t i = 0; i < kept; ++i) total += prob[i] = std::exp((logits[order[i]] - top) * inv_t);
  for (double& p : prob) p /= total;
  if (params_.top_p < 1.0f) {
    double mass = 0.0;
    int32_t i = 0;
    while (i < kept && mass < params_.top_p) mass += prob[i++];
    kept = std::max(i, 1);
  }
  if (params_.min_p > 0.0f) {
    const double floor = params_.min_p * prob[0];
    int32_t i = 1;
    while (i < kept && prob[i] >= floor) ++i;
    kept = i;
  }
  double mass = 0.0;
  for (int32_t i = 0; i < kept; ++i) mass += prob[i];
  std::vector<TokenProb> out(kept);
  for (int32_t i = 0; i < kept; ++i) out[i] = {order[i], prob[i] / mass};
  return out;
}

SampleResult Sampler::sample(std::span<const float> logits) {
  const std::vector<TokenProb> dist = filtered_distribution(logits);
  SampleResult r;
  r.id = dist.back().id;  // the fallback if rounding leaves u past the last cumulative sum
  // u in [0, 1) from the top 53 bits: the same stream on every platform for a given seed.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  double cumulative = 0.0;
  for (const TokenProb& t : dist) {
    cumulative += t.p;
    if (u < cumulative) { r.id = t.id; break; }
  }

  // log_softmax of the raw logits.
  const float top = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - top);
  const double log_z = top + std::log(sum);
  r.logprob = static_cast<float>(logits[r.id] - log_z);
  if (params_.top_logprobs > 0) {
    const int32_t k = std::min<int32_t>(params_.top_logprobs, static_cast<int32_t>(logits.size()));
    std::vector<int32_t> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
    });
    for (int32_t i = 0; i < k; ++i) r.top.push_back({ids[i], static_cast<float>(logits[ids[i]] - log_z)});
  }
  return r;
}

}  // namespace dsv4
