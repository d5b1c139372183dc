// Requests run through a scheduler until it is idle, each keeping the ids and log-probabilities
// it produced and its outcome: the speculative-decoding tests on the CPU backend
// (tests/engine/speculative_nano_test.cpp) and on the GPU (tests/cuda/speculative.cpp) compare such
// runs with and without drafts.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/scheduler.h"

namespace dsv4::test {

struct CollectedRequest {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  RequestOutcome outcome;
};

// One request per prompt, all submitted to s, then s runs until idle; element i is prompt i's.
inline std::vector<CollectedRequest> run_collecting(Scheduler& s, const std::vector<std::vector<int32_t>>& prompts,
                                                    const SamplingParams& sampling, int64_t max_tokens,
                                                    bool ignore_eos = false) {
  std::vector<CollectedRequest> out(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    Request r;
    r.prompt = prompts[i];
    r.sampling = sampling;
    r.max_tokens = max_tokens;
    r.ignore_eos = ignore_eos;
    CollectedRequest* o = &out[i];
    r.on_token = [o](const SampleResult& x) {
      o->ids.push_back(x.id);
      o->logprobs.push_back(x.logprob);
      return true;
    };
    r.on_finish = [o](const RequestOutcome& oc) { o->outcome = oc; };
    s.submit(std::move(r));
  }
  s.run_until_idle();
  return out;
}

}  // namespace dsv4::test
