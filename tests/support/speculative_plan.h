// A random plan of speculative verify steps for the rollback tests (tests/cpu/test_rollback.cpp,
// tests/cuda/speculative.cpp): the true token sequence, and per step the tokens fed (the true one
// and k drafts, of which the first `accept` are right) and the drafts asked for after the
// rollback. Steps that would roll back over a boundary the tests must cross reject every draft.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/forward.h"
#include "support/test_util.h"

namespace dsv4::test {

// One verify step: at position P the sequence is fed [truth[P], drafts…] where the first `accept`
// drafts are the true continuation and the others are wrong; it keeps P + accept + 1.
struct SpeculativeStep {
  std::vector<int32_t> fed;  // 1 + k tokens
  int64_t accept = 0;
  int n_draft = 1;           // drafts asked for after the rollback
};

struct SpeculativePlan {
  std::vector<int32_t> truth;
  int64_t prompt = 0;  // the first forward's length (a prefill with mtp)
  std::vector<SpeculativeStep> steps;
  int64_t forced_rejections = 0;  // steps made to reject everything (below)
};

// Steps of 1 … kMaxSpeculative drafts with random acceptance over n true tokens in [2, vocab). A
// step whose drafted positions close an HCA window (m = 128: positions 127, 255) — or, with
// block_tokens > 0, start a KV block — rejects all its drafts, so that the rolled-back rows hold an
// HCA emission and a whole block goes back to the pool. CSA windows close every 4 positions, so
// random steps cross them all the time.
inline SpeculativePlan make_speculative_plan(Rng& rng, int64_t n, int64_t prompt, int64_t vocab,
                                             int64_t block_tokens = 0) {
  SpeculativePlan p;
  p.prompt = prompt;
  for (int64_t i = 0; i < n; ++i) p.truth.push_back(int32_t(rng.integer(2, vocab - 1)));
  int64_t P = prompt;
  while (P + kMaxSpeculative + 1 < n) {
    SpeculativeStep s;
    bool reject_all = false;
    for (int64_t t = P + 1; t <= P + kMaxSpeculative; ++t)
      reject_all |= (t + 1) % kHcaRatio == 0 || (block_tokens > 0 && t % block_tokens == 0);
    const int64_t k = reject_all ? kMaxSpeculative : rng.integer(1, kMaxSpeculative);
    s.accept = reject_all ? 0 : rng.integer(0, k);
    p.forced_rejections += reject_all;
    for (int64_t i = 0; i <= k; ++i) s.fed.push_back(p.truth[size_t(P + i)]);
    if (s.accept < k) {  // the first rejected draft differs from the truth
      int32_t& wrong = s.fed[size_t(s.accept + 1)];
      wrong = int32_t(2 + (wrong - 2 + rng.integer(1, vocab - 3)) % (vocab - 2));
      for (int64_t i = s.accept + 2; i <= k; ++i) s.fed[size_t(i)] = int32_t(rng.integer(2, vocab - 1));
    }
    s.n_draft = int(rng.integer(1, kMaxSpeculative));
    p.steps.push_back(s);
    P += s.accept + 1;
  }
  return p;
}

}  // namespace dsv4::test
