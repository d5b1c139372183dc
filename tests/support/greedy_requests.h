// Many short greedy requests through a scheduler, each keeping its prompt and the ids it produced:
// the scheduler's end-to-end tests on the CPU backend (tests/engine) and on the GPU (tests/cuda)
// submit them, run the scheduler until idle, then rerun a sample alone and compare.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "engine/scheduler.h"

namespace dsv4::test {

// n random token ids in [2, vocab): never BOS (0) or EOS (1).
inline std::vector<int32_t> random_ids(std::mt19937_64& rng, int64_t n, int64_t vocab) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = int32_t(2 + rng() % uint64_t(vocab - 2));
  return v;
}

struct GreedyRequest {
  std::vector<int32_t> prompt, ids;
  int64_t max_tokens = 0;
  bool done = false;
};

// Submits n requests to s: prompts of 1..max_prompt random ids, 1..max_new greedy tokens each, EOS
// ignored. Each request's callbacks write into its element of the returned vector, so keep that
// vector (not a copy) alive and unresized until s is idle.
inline std::vector<GreedyRequest> submit_greedy_requests(Scheduler& s, std::mt19937_64& rng, int n, int64_t max_prompt,
                                                         int64_t max_new, int64_t vocab) {
  std::vector<GreedyRequest> outs(static_cast<size_t>(n));
  for (GreedyRequest& out : outs) {
    out.prompt = random_ids(rng, 1 + int64_t(rng() % uint64_t(max_prompt)), vocab);
    out.max_tokens = 1 + int64_t(rng() % uint64_t(max_new));
    Request r;
    r.prompt = out.prompt;
    r.sampling.temperature = 0.0f;
    r.max_tokens = out.max_tokens;
    r.ignore_eos = true;
    r.on_token = [&out](const SampleResult& x) {
      out.ids.push_back(x.id);
      return true;
    };
    r.on_finish = [&out](const RequestOutcome& oc) {
      EXPECT_EQ(oc.finish, FinishReason::kLength) << oc.error;
      out.done = true;
    };
    s.submit(std::move(r));
  }
  return outs;
}

}  // namespace dsv4::test
