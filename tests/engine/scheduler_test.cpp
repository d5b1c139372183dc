// The scheduler against a fake backend whose next-token logits are a fixed function of the ids a
// sequence holds (so a recomputed sequence continues exactly where it was) and whose KV blocks are
// counted in a KvBlockPool of its own: admission under slots and blocks, chunked prefill mixed with
// decode rows under the step budget, cancellation, preemption with recompute, page accounting,
// 1,000 short requests. The CPU backend's batch independence is tests/cpu/test_batching.cpp's.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <random>
#include <thread>

#include "engine/scheduler.h"
#include "model/config.h"
#include "model/kv_blocks.h"
#include "support/pooled_forward.h"
#include "support/seed.h"
#include "util/error.h"

namespace dsv4 {
namespace {

constexpr int64_t kVocab = 64;
constexpr int32_t kEos = 1;

using FakeSeq = test::PooledSequence;

// Logits peak at a hash of (last id, length), never EOS unless `eos_at` says so; rows per call and
// the mix of prefill / decode items are recorded.
class FakeForward : public test::PooledForward<FakeSeq> {
 public:
  FakeForward(int64_t block_tokens, int64_t blocks, int64_t slots, int64_t ctx)
      : PooledForward(kVocab, kEos, block_tokens, blocks, slots, ctx) {}
  void forward(std::span<ForwardItem> batch, const TraceHook*) override {
    if (during_forward) during_forward();
    int64_t rows = 0;
    bool prefill = false, decode = false;
    for (ForwardItem& it : batch) {
      auto& f = static_cast<FakeSeq&>(*it.seq);
      if (!reserve(f, f.position() + int64_t(it.tokens.size()))) fail("forward past the reserved blocks");
      f.ids.insert(f.ids.end(), it.tokens.begin(), it.tokens.end());
      rows += int64_t(it.tokens.size());
      (it.tokens.size() == 1 ? decode : prefill) = true;
      if (!it.logits) continue;  // a prefill chunk before the prompt's last
      it.logits->assign(kVocab, 0.0f);
      (*it.logits)[next_id(f.ids)] = 10.0f;
    }
    step_rows.push_back(rows);
    if (prefill && decode) ++mixed_steps;
  }
  // Hash of the whole history: any recompute error changes later tokens.
  int32_t next_id(const std::vector<int32_t>& ids) const {
    uint64_t h = 1469598103934665603ull;
    for (int32_t v : ids) h = (h ^ uint64_t(v)) * 1099511628211ull;
    if (eos_after > 0 && int64_t(ids.size()) >= eos_after) return kEos;
    return 2 + int32_t(h % uint64_t(kVocab - 2));
  }
  int64_t pass_rows() const override { return pass; }
  std::vector<int64_t> step_rows;
  int64_t pass = 0;  // what pass_rows() says
  int64_t mixed_steps = 0;
  int64_t eos_after = 0;  // > 0: EOS once a sequence holds this many ids
  std::function<void()> during_forward;  // runs at the start of every forward (mid-step)
};

struct Collected {
  std::vector<int32_t> ids;
  RequestOutcome outcome;
  bool finished = false;
};

Request greedy_request(std::vector<int32_t> prompt, int64_t max_tokens, Collected* out) {
  Request r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.max_tokens = max_tokens;
  r.on_token = [out](const SampleResult& s) {
    out->ids.push_back(s.id);
    return true;
  };
  r.on_finish = [out](const RequestOutcome& o) {
    EXPECT_FALSE(out->finished) << "on_finish twice";
    out->outcome = o;
    out->finished = true;
  };
  return r;
}

std::vector<int32_t> random_prompt(std::mt19937_64& rng, int64_t n) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (auto& v : p) v = 2 + int32_t(rng() % uint64_t(kVocab - 2));
  return p;
}

// What a request generates alone with an unlimited pool: the oracle for every batched run.
std::vector<int32_t> alone(const std::vector<int32_t>& prompt, int64_t max_tokens) {
  FakeForward f(4, 1 << 16, 4, 1 << 16);
  Collected c;
  Scheduler s(f, {});
  s.submit(greedy_request(prompt, max_tokens, &c));
  s.run_until_idle();
  EXPECT_TRUE(c.finished);
  return c.ids;
}

TEST(Scheduler, ManyRequestsEqualTheirSoloRunsAndGiveEveryBlockBack) {
  std::mt19937_64 rng(test::seed_for_this_test());
  FakeForward f(4, 64, 8, 512);
  SchedulerOptions o;
  o.max_running = 6;
  o.max_step_tokens = 16;
  Scheduler s(f, o);
  std::vector<Collected> got(40);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int64_t> max_tokens;
  for (size_t i = 0; i < got.size(); ++i) {
    prompts.push_back(random_prompt(rng, 1 + int64_t(rng() % 40)));
    max_tokens.push_back(1 + int64_t(rng() % 20));
    s.submit(greedy_request(prompts.back(), max_tokens.back(), &got[i]));
  }
  s.run_until_idle();
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].finished) << i;
    EXPECT_EQ(got[i].outcome.finish, FinishReason::kLength) << i;
    EXPECT_EQ(got[i].ids, alone(prompts[i], max_tokens[i])) << "request " << i;
  }
  for (int64_t rows : f.step_rows) EXPECT_LE(rows, o.max_step_tokens);
  EXPECT_GT(f.mixed_steps, 0) << "no step mixed prefill chunks with decode rows";
  const KvCacheInfo kv = f.kv_cache();
  EXPECT_EQ(kv.free_blocks, kv.total_blocks);
  EXPECT_EQ(kv.free_sequences, kv.max_sequences);
  EXPECT_EQ(s.stats().running, 0);
  EXPECT_EQ(s.stats().waiting, 0);
}

// max_step_tokens 0 (the default): steps fill to the backend's pass, else to kDefaultStepTokens.
TEST(Scheduler, StepsFillTheBackendsPassByDefault) {
  std::mt19937_64 rng(test::seed_for_this_test());
  for (const int64_t pass : {int64_t(0), int64_t(24)}) {
    FakeForward f(4, 1 << 12, 4, 1 << 14);
    f.pass = pass;
    Scheduler s(f, {});
    Collected c;
    s.submit(greedy_request(random_prompt(rng, 5000), 2, &c));
    s.run_until_idle();
    ASSERT_TRUE(c.finished);
    const int64_t want = pass > 0 ? pass : kDefaultStepTokens;
    EXPECT_EQ(*std::max_element(f.step_rows.begin(), f.step_rows.end()), want) << "pass " << pass;
    EXPECT_EQ(f.step_rows.front(), want) << "pass " << pass;
  }
  FakeForward f(4, 64, 4, 512);
  SchedulerOptions bad;
  bad.max_step_tokens = -1;
  EXPECT_THROW(Scheduler(f, bad), Error);
}

TEST(Scheduler, AdmissionRespectsSlotsAndRunningLimit) {
  FakeForward f(4, 1024, 3, 512);
  SchedulerOptions o;
  o.max_running = 8;  // more than the 3 slots: the slots bound it
  Scheduler s(f, o);
  std::vector<Collected> got(7);
  for (auto& g : got) s.submit(greedy_request({5, 6, 7}, 10, &g));
  int64_t max_running = 0;
  while (s.step()) max_running = std::max(max_running, s.stats().running);
  EXPECT_EQ(max_running, 3);
  for (auto& g : got) EXPECT_EQ(g.ids.size(), 10u);
}

TEST(Scheduler, PreemptionRecomputesExactly) {
  std::mt19937_64 rng(test::seed_for_this_test());
  // 12 blocks of 4 tokens: three sequences growing to ~40 tokens cannot all fit.
  FakeForward f(4, 12, 4, 64);
  SchedulerOptions o;
  o.max_running = 4;
  o.max_step_tokens = 8;
  Scheduler s(f, o);
  std::vector<Collected> got(3);
  std::vector<std::vector<int32_t>> prompts;
  for (auto& g : got) {
    prompts.push_back(random_prompt(rng, 6));
    s.submit(greedy_request(prompts.back(), 30, &g));
  }
  s.run_until_idle();
  int64_t preempted = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].finished);
    EXPECT_EQ(got[i].ids, alone(prompts[i], 30)) << i;
    preempted += got[i].outcome.n_preempted;
  }
  EXPECT_GT(preempted, 0) << "the pool was never short: the test does not test preemption";
  EXPECT_EQ(s.stats().preemptions, preempted);
  EXPECT_EQ(f.kv_cache().free_blocks, 12);
}

// A short pool evicts the newest admission (vLLM's recompute policy): the oldest request keeps its
// blocks and is never recomputed, however often the others are.
TEST(Scheduler, PreemptionEvictsTheNewest) {
  std::mt19937_64 rng(test::seed_for_this_test());
  FakeForward f(4, 12, 4, 64);  // as above: three requests growing to ~36 tokens cannot all fit
  SchedulerOptions o;
  o.max_running = 4;
  o.max_step_tokens = 8;
  Scheduler s(f, o);
  std::vector<Collected> got(3);
  for (auto& g : got) s.submit(greedy_request(random_prompt(rng, 6), 30, &g));
  s.run_until_idle();
  for (const Collected& g : got) ASSERT_TRUE(g.finished);
  EXPECT_EQ(got[0].outcome.n_preempted, 0) << "the oldest request was evicted";
  EXPECT_GT(got[1].outcome.n_preempted + got[2].outcome.n_preempted, 0) << "the pool was never short";
}

// When the step budget is shorter than the decoding sequences, the oldest get the rows: with a
// budget of 2 and three equal requests, the first two finish before the third emits its second
// token.
TEST(Scheduler, DecodeRowsGoToTheOldestFirst) {
  FakeForward f(4, 256, 4, 512);
  SchedulerOptions o;
  o.max_step_tokens = 2;
  Scheduler s(f, o);
  std::vector<Collected> got(3);
  std::vector<int> finish_order;
  for (size_t i = 0; i < got.size(); ++i) {
    Request r = greedy_request({5, 6}, 6, &got[i]);
    auto collect = r.on_finish;
    r.on_finish = [collect, i, &finish_order](const RequestOutcome& out) {
      finish_order.push_back(int(i));
      collect(out);
    };
    s.submit(std::move(r));
  }
  s.run_until_idle();
  EXPECT_EQ(finish_order, (std::vector<int>{0, 1, 2}));
  for (const Collected& g : got) EXPECT_EQ(g.ids.size(), 6u);
}

// Admission reserves the prompt and the first sampled token: a prompt that fills the pool exactly
// is refused before it runs (no prefill thrown away, no token emitted, no preemption), and one
// token shorter runs to its end.
TEST(Scheduler, AdmissionReservesTheFirstSampledToken) {
  std::mt19937_64 rng(test::seed_for_this_test());
  FakeForward f(4, 3, 4, 64);  // 3 blocks = 12 positions
  Scheduler s(f, {});
  Collected full, fits;
  s.submit(greedy_request(random_prompt(rng, 12), 5, &full));
  s.run_until_idle();
  ASSERT_TRUE(full.finished);
  EXPECT_EQ(full.outcome.finish, FinishReason::kError);
  EXPECT_NE(full.outcome.error.find("cannot hold 13 tokens"), std::string::npos) << full.outcome.error;
  EXPECT_TRUE(full.ids.empty());
  EXPECT_TRUE(f.step_rows.empty()) << "the refused prompt was prefilled";
  EXPECT_EQ(s.stats().preemptions, 0);
  s.submit(greedy_request(random_prompt(rng, 11), 1, &fits));
  s.run_until_idle();
  ASSERT_TRUE(fits.finished);
  EXPECT_EQ(fits.outcome.finish, FinishReason::kLength);
  EXPECT_EQ(fits.ids.size(), 1u);
  EXPECT_EQ(f.kv_cache().free_blocks, 3);
}

TEST(Scheduler, CancelFinishesAtOnceAndFreesBlocks) {
  FakeForward f(4, 256, 4, 512);
  Scheduler s(f, {});
  Collected a, b;
  const RequestId ia = s.submit(greedy_request({3, 4, 5}, 100, &a));
  for (int i = 0; i < 6; ++i) s.step();
  EXPECT_LT(f.kv_cache().free_blocks, 256);
  s.cancel(ia);
  s.step();  // the cancellation is taken at the step boundary; nothing else runs
  EXPECT_TRUE(a.finished);
  EXPECT_EQ(a.outcome.finish, FinishReason::kCancelled);
  EXPECT_EQ(a.ids.size(), 6u);
  EXPECT_EQ(f.kv_cache().free_blocks, 256);
  EXPECT_EQ(f.kv_cache().free_sequences, 4);
  s.cancel(ia);  // finished and unknown ids are ignored
  s.cancel(12345);
  s.submit(greedy_request({3, 4, 6}, 5, &b));
  s.run_until_idle();
  EXPECT_EQ(b.outcome.finish, FinishReason::kLength);
  // A request cancelled while it waits never runs.
  Collected w;
  const RequestId iw = s.submit(greedy_request({3}, 5, &w));
  s.cancel(iw);
  s.run_until_idle();
  EXPECT_EQ(w.outcome.finish, FinishReason::kCancelled);
  EXPECT_TRUE(w.ids.empty());
}

TEST(Scheduler, StopRulesAndContextCap) {
  FakeForward f(4, 256, 4, 32);
  f.eos_after = 12;
  Scheduler s(f, {});
  Collected eos, cap, stop_string;
  s.submit(greedy_request({2, 3, 4, 5}, 100, &eos));
  s.run_until_idle();
  EXPECT_EQ(eos.outcome.finish, FinishReason::kEos);
  EXPECT_EQ(eos.ids.back(), kEos);
  EXPECT_EQ(eos.ids.size(), 9u);  // holds 4 + 8 fed ids when EOS comes: 9 samples

  Collected past_eos;  // ignore_eos: EOS is an ordinary token, max_tokens ends the request
  Request ignoring = greedy_request({2, 3, 4, 5}, 15, &past_eos);
  ignoring.ignore_eos = true;
  s.submit(std::move(ignoring));
  s.run_until_idle();
  EXPECT_EQ(past_eos.outcome.finish, FinishReason::kLength);
  ASSERT_EQ(past_eos.ids.size(), 15u);
  EXPECT_EQ(std::count(past_eos.ids.begin(), past_eos.ids.end(), kEos), 7) << "EOS from the 9th token on";

  f.eos_after = 0;
  s.submit(greedy_request({2, 3, 4, 5}, 1000, &cap));  // 1000 tokens do not fit 32
  s.run_until_idle();
  EXPECT_EQ(cap.outcome.finish, FinishReason::kLength);
  EXPECT_EQ(cap.ids.size(), 28u);

  Request r = greedy_request({2, 3}, 50, &stop_string);
  r.on_token = [&](const SampleResult& x) {
    stop_string.ids.push_back(x.id);
    return stop_string.ids.size() < 3;
  };
  s.submit(std::move(r));
  s.run_until_idle();
  EXPECT_EQ(stop_string.outcome.finish, FinishReason::kStopString);
  EXPECT_EQ(stop_string.ids.size(), 3u);
}

TEST(Scheduler, BadRequestsAreErrorsAndTheQueueHasALimit) {
  FakeForward f(4, 256, 4, 16);
  SchedulerOptions o;
  o.max_waiting = 2;
  Scheduler s(f, o);
  Collected c;
  EXPECT_THROW(s.submit(greedy_request({}, 5, &c)), Error);
  EXPECT_THROW(s.submit(greedy_request({int32_t(kVocab)}, 5, &c)), Error);
  EXPECT_THROW(s.submit(greedy_request({-1}, 5, &c)), Error);
  EXPECT_THROW(s.submit(greedy_request(std::vector<int32_t>(16, 3), 5, &c)), Error);  // fills the context
  EXPECT_THROW(s.submit(greedy_request({3}, 0, &c)), Error);
  Request bad_temp = greedy_request({3}, 5, &c);
  bad_temp.sampling.temperature = -1.0f;
  EXPECT_THROW(s.submit(std::move(bad_temp)), Error);
  Collected q1, q2;
  s.submit(greedy_request({3}, 2, &q1));
  s.submit(greedy_request({3}, 2, &q2));
  EXPECT_THROW(s.submit(greedy_request({3}, 2, &c)), QueueFullError);
  s.run_until_idle();
  EXPECT_TRUE(q1.finished && q2.finished);
}

// The limit holds at every moment of a step, not only between steps: a request submitted while
// the forward runs (as the server's HTTP threads do) sees the request the step just took from
// the incoming queue as waiting. (The count was published after the step, so a third request got
// in: CI's test_queue_full_is_429 failure.)
TEST(Scheduler, TheQueueLimitHoldsWhileAStepRuns) {
  FakeForward f(4, 256, 4, 512);
  SchedulerOptions o;
  o.max_running = 1;
  o.max_waiting = 1;
  Scheduler s(f, o);
  Collected running, waiting, third;
  s.submit(greedy_request({3}, 50, &running));
  ASSERT_TRUE(s.step());  // admits `running`
  s.submit(greedy_request({4}, 2, &waiting));
  int refused = 0, accepted = 0;
  f.during_forward = [&] {
    try {
      s.submit(greedy_request({5}, 2, &third));
      ++accepted;
    } catch (const QueueFullError&) {
      ++refused;
    }
  };
  ASSERT_TRUE(s.step());  // takes `waiting` from the incoming queue; it cannot run yet
  EXPECT_EQ(accepted, 0) << "a second request waited while the limit is 1";
  EXPECT_EQ(refused, 1);
  f.during_forward = nullptr;
  s.run_until_idle();
  EXPECT_TRUE(running.finished && waiting.finished);
  EXPECT_EQ(s.stats().waiting, 0);
}

// A borrowed sequence continues from what it holds (chat's prefix reuse).
TEST(Scheduler, BorrowedSequenceContinues) {
  FakeForward f(4, 256, 4, 512);
  auto seq = f.new_sequence(512);
  Scheduler s(f, {});
  Collected first, second;
  s.submit(greedy_request({7, 8, 9}, 4, &first));
  s.run_until_idle();
  Collected a;
  Request r = greedy_request({7, 8, 9}, 4, &a);
  r.seq = seq.get();
  s.submit(std::move(r));
  s.run_until_idle();
  EXPECT_EQ(a.ids, first.ids);
  EXPECT_EQ(seq->position(), 3 + 3);  // the last sample is not fed
  std::vector<int32_t> held = {7, 8, 9, a.ids[0], a.ids[1], a.ids[2]};
  Request more = greedy_request({11}, 3, &second);
  more.seq = seq.get();
  more.held = held;
  s.submit(std::move(more));
  s.run_until_idle();
  held.push_back(11);
  EXPECT_EQ(second.ids, alone(held, 3));
}

// Threads: requests submitted from many threads while run() serves; stop() drains.
TEST(Scheduler, ServesSubmissionsFromOtherThreadsAndDrainsOnStop) {
  FakeForward f(16, 4096, 64, 1024);
  SchedulerOptions o;
  o.max_running = 32;
  Scheduler s(f, o);
  std::thread server([&] { s.run(); });
  constexpr int kThreads = 8, kPerThread = 125;  // 1,000 short requests
  std::vector<std::vector<Collected>> got(kThreads, std::vector<Collected>(kPerThread));
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t)
    clients.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i)
        s.submit(greedy_request({2 + t, 3 + i % 50, 4}, 1 + i % 7, &got[size_t(t)][size_t(i)]));
    });
  for (auto& c : clients) c.join();
  s.stop();
  server.join();
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kPerThread; ++i) {
      const Collected& c = got[size_t(t)][size_t(i)];
      ASSERT_TRUE(c.finished) << t << "/" << i;
      EXPECT_EQ(c.ids, alone({2 + t, 3 + i % 50, 4}, 1 + i % 7));
    }
  EXPECT_EQ(f.kv_cache().free_blocks, 4096);
  EXPECT_EQ(f.kv_cache().free_sequences, 64);
}

}  // namespace
}  // namespace dsv4
