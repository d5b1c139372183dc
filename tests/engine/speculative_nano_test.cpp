// Speculative decoding on the CPU backend with the trained nano model and its MTP block: greedy
// output with k = 1, 2, 3 drafts per step equals plain greedy bit for bit (ids and logprobs) for
// prompts of real text (models/nano/validation.txt: random ids are never drafted right), in
// batches, on a KV pool small enough that speculating sequences are preempted and recomputed;
// sampling with speculation runs, reproducibly for a seed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>

#include "cpu/cpu_forward.h"
#include "engine/scheduler.h"
#include "model/config.h"
#include "support/collected_requests.h"
#include "support/sanitizer.h"
#include "support/nano_text.h"
#include "support/seed.h"

namespace dsv4 {
namespace {

const std::filesystem::path kNano = std::filesystem::path(DSV4_SOURCE_DIR) / "models/nano";

std::unique_ptr<Forward> nano(int64_t kv_tokens = 0) {
  CpuOptions o;
  o.numerics = Numerics::kOfficial;
  o.n_threads = 2;
  o.ctx_size = 1024;
  o.kv_cache_tokens = kv_tokens;
  return make_cpu_forward(kNano, o);
}

using Out = test::CollectedRequest;

std::vector<Out> generate_all(Forward& f, const std::vector<std::vector<int32_t>>& prompts, int k,
                              const SamplingParams& sampling, int64_t max_tokens, bool ignore_eos = false) {
  SchedulerOptions o;
  o.max_running = 8;
  o.max_step_tokens = 256;
  o.speculative = k;
  Scheduler s(f, o);
  return test::run_collecting(s, prompts, sampling, max_tokens, ignore_eos);
}

TEST(SpeculativeNano, GreedyEqualsPlainGreedyBitForBitWithPreemption) {
  std::mt19937_64 rng(test::seed_for_this_test());
  // Release: 190–250 prompt tokens + 64 generated cross a 256-token block: on a pool of 6 blocks
  // eight sequences are admitted on one block each and preempt one another as they grow.
  // Under the sanitizers (ten times slower, and this was CI's long pole at over 8 minutes): two
  // sequences of 252–255 tokens + 16 generated, EOS ignored, on 2 blocks, and one k drawn from
  // the seed. Both hold a block from the first step and both must cross into a second one within
  // their first 5 generated tokens, so the first to cross takes the other's block: a preemption
  // every run, which is the memory-safety question. (With 241–250 tokens a seed drew 241 and
  // 242: the first fits one block, 241 + 15 fed = 256 positions, and finished before the second
  // crossed at its last token, so nothing was preempted.)
  const bool short_run = test::kSanitizerBuild;
  const int n_prompts = short_run ? 2 : 8;
  const int64_t n_generated = short_run ? 16 : 64;
  const int64_t pool_blocks = short_run ? 2 : 6;
  const auto prompts = short_run ? test::nano_text_prompts(rng, n_prompts, 252, 255)
                                  : test::nano_text_prompts(rng, n_prompts, 190, 250);
  std::vector<int> draft_counts;
  if (short_run) {
    draft_counts = {1 + int(rng() % uint64_t(kMaxSpeculative))};
    test::note_left_out("SpeculativeNano: 2 of 8 prompts, 16 of 64 tokens, k = " + std::to_string(draft_counts[0]) +
                        " only");
  } else {
    for (int k = 1; k <= kMaxSpeculative; ++k) draft_counts.push_back(k);
  }
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  greedy.top_logprobs = 2;
  auto plain_f = nano();
  const std::vector<Out> plain = generate_all(*plain_f, prompts, 0, greedy, n_generated, short_run);
  int64_t preempted = 0;
  for (int k : draft_counts) {
    auto f = nano(pool_blocks * 256);
    ASSERT_TRUE(f->can_draft());
    const std::vector<Out> spec = generate_all(*f, prompts, k, greedy, n_generated, short_run);
    SpeculativeCounts c;
    for (size_t i = 0; i < prompts.size(); ++i) {
      ASSERT_EQ(spec[i].ids, plain[i].ids) << "k=" << k << " prompt " << i;
      ASSERT_EQ(spec[i].outcome.finish, plain[i].outcome.finish) << "k=" << k << " prompt " << i;
      ASSERT_EQ(spec[i].logprobs.size(), plain[i].logprobs.size());
      for (size_t t = 0; t < spec[i].logprobs.size(); ++t)
        ASSERT_EQ(spec[i].logprobs[t], plain[i].logprobs[t]) << "k=" << k << " prompt " << i << " token " << t;
      c += spec[i].outcome.speculative;
      preempted += spec[i].outcome.n_preempted;
    }
    EXPECT_GT(c.accepted, 0) << "nano's MTP block never drafted right on real text";
    EXPECT_LT(c.accepted, c.drafted);
    const KvCacheInfo kv = f->kv_cache();
    EXPECT_EQ(kv.free_blocks, kv.total_blocks);
    std::printf("[nano] k=%d: %lld of %lld drafts kept (%.1f %%), mean accepted length %.2f\n", k,
                (long long)c.accepted, (long long)c.drafted, 100.0 * c.acceptance_rate(), c.mean_accepted_length());
  }
  EXPECT_GT(preempted, 0) << "no sequence was preempted: the pool does not test recomputation";
}

TEST(SpeculativeNano, SamplingRunsAndIsReproducible) {
  std::mt19937_64 rng(test::seed_for_this_test());
  // Under the sanitizers: 2 of the 4 prompts and 16 of the 32 tokens.
  const bool short_run = test::kSanitizerBuild;
  if (short_run) test::note_left_out("SpeculativeNano sampling: prompts 3..4 and tokens 17..32");
  const auto prompts = test::nano_text_prompts(rng, short_run ? 2 : 4, 20, 80);
  const int64_t n_generated = short_run ? 16 : 32;
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_p = 0.95f;
  p.seed = rng();
  auto f = nano();
  const std::vector<Out> a = generate_all(*f, prompts, kMaxSpeculative, p, n_generated);
  const std::vector<Out> b = generate_all(*f, prompts, kMaxSpeculative, p, n_generated);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(a[i].ids, b[i].ids) << "prompt " << i;
    EXPECT_TRUE(a[i].outcome.finish == FinishReason::kLength || a[i].outcome.finish == FinishReason::kEos);
    EXPECT_EQ(a[i].outcome.n_generated, int64_t(a[i].ids.size()));
    const SpeculativeCounts& c = a[i].outcome.speculative;
    EXPECT_LE(c.accepted, c.drafted);
    EXPECT_GT(c.verify_steps, 0);
    for (float lp : a[i].logprobs) EXPECT_TRUE(std::isfinite(lp) && lp <= 0.0f);
    std::printf("[nano] sampled prompt %zu: %lld of %lld drafts kept\n", i, (long long)c.accepted,
                (long long)c.drafted);
  }
}

}  // namespace
}  // namespace dsv4
