// The scheduler on the CPU backend with the trained nano model: a sequence's logits do not depend
// on what else is in the step (bit-identical alone vs inside a mixed batch of prefill chunks and
// decode rows crossing CSA/HCA window closings), and many short requests through the scheduler
// give exactly their solo greedy outputs and leave every KV block and slot in the pool.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "cpu/cpu_forward.h"
#include "engine/scheduler.h"
#include "model/config.h"
#include "support/greedy_requests.h"
#include "support/sanitizer.h"
#include "support/seed.h"

namespace dsv4 {
namespace {

const std::filesystem::path kNano = std::filesystem::path(DSV4_SOURCE_DIR) / "models/nano";

std::unique_ptr<Forward> nano(int64_t kv_tokens = 0) {
  CpuOptions o;
  o.numerics = Numerics::kOfficial;
  o.n_threads = 2;
  o.kv_cache_tokens = kv_tokens;
  o.ctx_size = 4096;
  return make_cpu_forward(kNano, o);
}

// Four sequences fed in different chunkings: alone (each in its own forward calls) and together
// (every call carries several sequences, prefill chunks next to one-token decode rows). The last
// row's logits of every call must be bit-identical.
TEST(SchedulerCpu, LogitsDoNotDependOnTheBatch) {
  std::mt19937_64 rng(test::seed_for_this_test());
  auto f = nano();
  const int64_t V = f->config().vocab_size;
  // Lengths cross the CSA window (4), the HCA window (128) and the sliding window (128).
  std::vector<int64_t> lengths = {131, 260, 7, 140};
  // Chunk plan per sequence: a prefill of some size, then one-token steps.
  std::vector<int64_t> first = {100, 250, 3, 129};
  if (test::kSanitizerBuild) {  // the 260-token sequence's prefill crosses 127 too
    lengths.pop_back();
    first.pop_back();
    test::note_left_out("SchedulerCpu batch: the fourth sequence (140 tokens, a prefill across the HCA closing at 127)");
  }
  std::vector<std::vector<int32_t>> ids;
  for (int64_t n : lengths) ids.push_back(test::random_ids(rng, n, V));

  auto run = [&](bool together) {
    std::vector<std::unique_ptr<SequenceState>> seqs;
    for (size_t s = 0; s < ids.size(); ++s) seqs.push_back(f->new_sequence(512));
    std::vector<std::vector<std::vector<float>>> out(ids.size());
    std::vector<int64_t> fed(ids.size(), 0);
    while (true) {
      std::vector<ForwardItem> items;
      std::vector<size_t> who;
      std::vector<std::vector<float>> logits(ids.size());
      for (size_t s = 0; s < ids.size(); ++s) {
        const int64_t n_left = int64_t(ids[s].size()) - fed[s];
        if (n_left == 0) continue;
        const int64_t n = fed[s] == 0 ? first[s] : 1;
        ForwardItem it;
        it.seq = seqs[s].get();
        it.tokens = std::span<const int32_t>(ids[s]).subspan(size_t(fed[s]), size_t(n));
        it.logits = &logits[s];
        items.push_back(it);
        who.push_back(s);
        fed[s] += n;
      }
      if (items.empty()) break;
      if (together) {
        f->forward(items);
      } else {
        for (ForwardItem& it : items) f->forward(std::span<ForwardItem>(&it, 1));
      }
      for (size_t i = 0; i < who.size(); ++i) out[who[i]].push_back(logits[who[i]]);
    }
    return out;
  };
  const auto alone = run(false), batched = run(true);
  for (size_t s = 0; s < ids.size(); ++s) {
    ASSERT_EQ(alone[s].size(), batched[s].size());
    for (size_t c = 0; c < alone[s].size(); ++c)
      ASSERT_EQ(std::memcmp(alone[s][c].data(), batched[s][c].data(), alone[s][c].size() * 4), 0)
          << "sequence " << s << " call " << c;
  }
}

// Short requests through the scheduler on a small pool: greedy outputs equal their solo runs, the
// pool is whole afterwards.
TEST(SchedulerCpu, ShortRequestsEqualSoloRunsAndReturnEveryBlock) {
#if defined(__SANITIZE_ADDRESS__)
  constexpr int kRequests = 60;  // ASan makes nano ~10× slower; the release run does 1,000
  std::printf("ASan build: %d requests instead of 1,000\n", kRequests);
#else
  constexpr int kRequests = 1000;
#endif
  std::mt19937_64 rng(test::seed_for_this_test());
  // 24 blocks of 256 tokens for up to 64 sequences: admission waits for blocks.
  auto f = nano(24 * 256);
  const int64_t V = f->config().vocab_size;
  SchedulerOptions o;
  o.max_running = 64;
  o.max_step_tokens = 256;
  Scheduler s(*f, o);
  std::vector<test::GreedyRequest> outs = test::submit_greedy_requests(s, rng, kRequests, 6, 4, V);
  s.run_until_idle();
  const KvCacheInfo kv = f->kv_cache();
  EXPECT_EQ(kv.free_blocks, kv.total_blocks);
  EXPECT_EQ(kv.free_sequences, kv.max_sequences);
  // Solo reruns of a sample of them (all of them would double the test's time).
  for (int i = 0; i < kRequests; i += 25) {
    const test::GreedyRequest& out = outs[size_t(i)];
    ASSERT_TRUE(out.done) << i;
    ASSERT_EQ(int64_t(out.ids.size()), out.max_tokens) << i;
    auto seq = f->new_sequence(64);
    std::vector<int32_t> fed = out.prompt;
    std::vector<float> logits;
    for (int64_t t = 0; t < out.max_tokens; ++t) {
      ForwardItem it;
      it.seq = seq.get();
      it.tokens = t == 0 ? std::span<const int32_t>(fed) : std::span<const int32_t>(&fed.back(), 1);
      it.logits = &logits;
      f->forward(std::span<ForwardItem>(&it, 1));
      const int32_t best = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      ASSERT_EQ(best, out.ids[size_t(t)]) << "request " << i << " token " << t;
      fed.push_back(best);
    }
  }
}

}  // namespace
}  // namespace dsv4
