// Next-token sampling from one row of logits: greedy, temperature, top-k, top-p, min-p, a seeded
// RNG (reproducible), and log-probabilities. The loop that calls it is generation.h.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace dsv4 {

// Defaults: the reference generate.py samples at temperature 0.6 with no other filter.
inline constexpr float kDefaultTemperature = 0.6f;

struct SamplingParams {
  float temperature = kDefaultTemperature;  // 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 0;                        // keep the k most likely; 0: off
  float top_p = 1.0f;                       // keep the smallest set with mass >= p; 1: off
  float min_p = 0.0f;                       // keep p >= min_p * p_max; 0: off
  uint64_t seed = 0;                        // same seed + same logits -> same tokens
  int32_t top_logprobs = 0;                 // report this many most likely alternatives
  bool logprobs = false;                    // the chosen token's log-probability is wanted (the host
                                            // sampler reports it; a device sampler cannot)
};

// Throws dsv4::Error naming the parameter when a value is out of range.
void validate(const SamplingParams& p);

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0.0f;
};

struct TokenProb {
  int32_t id = 0;
  double p = 0.0;
};

struct SampleResult {
  int32_t id = 0;
  float logprob = 0.0f;             // of `id` under the model's distribution (raw logits, T = 1)
  std::vector<TokenLogprob> top;    // the `top_logprobs` most likely tokens, most likely first
};

// Filters apply in the Hugging Face order: temperature scales the logits, then top-k, top-p and
// min-p cut the softmax, and the survivors are renormalised before the draw. Log-probabilities
// are reported from the unmodified logits (what OpenAI-style APIs return).
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  SampleResult sample(std::span<const float> logits);  // [vocab] fp32; NaN is an error

  // The distribution `sample` draws from, most likely first, for tests and debugging.
  std::vector<TokenProb> filtered_distribution(std::span<const float> logits) const;

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace dsv4
