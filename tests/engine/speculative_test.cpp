// Speculative decoding in the engine. The acceptance rule (speculative.h) on fixed rows: greedy
// keeps the argmax prefix; with sampling every emitted token follows the main model's filtered
// distribution (binomial bounds, as sampler_test.cpp). The scheduler against a scripted backend
// whose main-model and draft logits are fixed functions of a sequence's ids (so rollback,
// recompute and batching cannot hide an error): greedy output equal to plain greedy with any
// batch and budget, stop rules / max_tokens / context cap exact when several tokens come at once,
// preemption, the device-sampled path, and the joint distribution of sampled tokens. Logits and
// seeds are fresh each run (support/seed.h prints the seed).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "engine/scheduler.h"
#include "engine/speculative.h"
#include "model/config.h"
#include "model/kv_blocks.h"
#include "support/pooled_forward.h"
#include "support/seed.h"
#include "util/error.h"

namespace dsv4 {
namespace {

// ---- the rule alone ----

std::vector<float> normals(std::mt19937_64& rng, size_t n, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

int32_t argmax(std::span<const float> l) { return int32_t(std::max_element(l.begin(), l.end()) - l.begin()); }

// Whether `count` (draws per cell) follows the probabilities `want` over n draws. A cell expected
// λ = n·p ≥ 20 times must lie within 5 binomial standard deviations (+1 for the count's
// discreteness; false alarm ~6e-7 per cell). Below that the normal approximation fails (a cell
// expected 0.03 times and seen twice is a 3e-4 event, and thousands of cells are checked): such a
// cell must stay under the Poisson bound λ + 6√λ + 6 (P(X ≥ it) < 1e-8 for every λ < 20), and
// the small cells pooled are checked again as one cell by the same two rules. A cell of
// probability 0 must never be drawn.
void expect_follows(const std::vector<double>& want, const std::vector<int64_t>& count, int64_t n,
                    const std::string& what) {
  auto check = [&](double p, int64_t got, const std::string& cell) {
    const double lambda = double(n) * p;
    if (p == 0.0) {
      EXPECT_EQ(got, 0) << what << ": " << cell << " has probability 0 but was drawn";
    } else if (lambda >= 20.0) {
      EXPECT_LE(std::abs(double(got) - lambda), 5.0 * std::sqrt(lambda * (1.0 - p)) + 1.0)
          << what << ": " << cell << " expected " << lambda << " times, drawn " << got;
    } else {
      EXPECT_LE(double(got), lambda + 6.0 * std::sqrt(lambda) + 6.0)
          << what << ": " << cell << " expected " << lambda << " times, drawn " << got;
    }
  };
  double small_p = 0.0;
  int64_t small_count = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    check(want[i], count[i], "cell " + std::to_string(i));
    if (want[i] > 0.0 && double(n) * want[i] < 20.0) {
      small_p += want[i];
      small_count += count[i];
    }
  }
  if (small_p > 0.0) check(small_p, small_count, "the pooled small cells");
}

TEST(SpeculativeRule, GreedyKeepsTheArgmaxPrefixAndReportsWhatTheSamplerWould) {
  std::mt19937_64 rng(test::seed_for_this_test());
  SamplingParams g;
  g.temperature = 0.0f;
  g.top_logprobs = 3;
  SpeculativeSampler rule(g);
  Sampler plain(g);
  const size_t V = 50;
  for (int trial = 0; trial < 200; ++trial) {
    const size_t k = 1 + rng() % kMaxSpeculative;
    const std::vector<float> target = normals(rng, (k + 1) * V, 2.0f);
    const size_t agree = rng() % (k + 1);  // drafts 0 … agree−1 are the argmax, draft `agree` not
    std::vector<int32_t> drafts;
    for (size_t i = 0; i < k; ++i) {
      const int32_t best = argmax(std::span<const float>(target).subspan(i * V, V));
      drafts.push_back(i < agree ? best : int32_t((best + 1 + rng() % (V - 1)) % V));
    }
    const Verdict v = rule.verify(target, drafts, {});
    ASSERT_EQ(v.n_accepted, int64_t(agree));
    ASSERT_EQ(v.tokens.size(), agree + 1);
    for (size_t i = 0; i <= agree; ++i) {
      const std::span<const float> row = std::span<const float>(target).subspan(i * V, V);
      const SampleResult want = plain.sample(row);
      EXPECT_EQ(v.tokens[i].id, want.id);
      EXPECT_EQ(v.tokens[i].logprob, want.logprob);  // the same computation, bit for bit
      ASSERT_EQ(v.tokens[i].top.size(), want.top.size());
      for (size_t j = 0; j < want.top.size(); ++j) {
        EXPECT_EQ(v.tokens[i].top[j].id, want.top[j].id);
        EXPECT_EQ(v.tokens[i].top[j].logprob, want.top[j].logprob);
      }
    }
  }
}

// Fixed rows p_0 … p_k (main model) and q_0 … q_{k−1} (draft): the i-th emitted token, among the
// trials that emitted one, must be distributed as p_i (each row here ignores the tokens before it,
// so the conditional is p_i itself), and draft 0 must be kept with probability Σ min(p_0, q_0).
TEST(SpeculativeRule, EveryEmittedTokenFollowsTheFilteredTargetDistribution) {
  std::mt19937_64 rng(test::seed_for_this_test());
  const std::vector<SamplingParams> configs = {
      {1.0f, 0, 1.0f, 0.0f}, {0.7f, 0, 1.0f, 0.0f}, {1.2f, 5, 1.0f, 0.0f}, {0.9f, 0, 0.8f, 0.0f},
      {1.0f, 0, 1.0f, 0.1f}};
  const size_t V = 12, k = kMaxSpeculative;
  for (SamplingParams params : configs) {
    params.seed = rng();
    SpeculativeSampler rule(params);
    const Sampler transforms(params);
    const std::vector<float> target = normals(rng, (k + 1) * V, 1.5f);
    auto dist = [&](std::span<const float> row) {
      std::vector<double> p(V, 0.0);
      for (const TokenProb& t : transforms.filtered_distribution(row)) p[size_t(t.id)] = t.p;
      return p;
    };
    // Drafts near the target but not equal, redrawn until the first draft is kept with a
    // probability Σ min(p_0, q_0) in [0.1, 0.9]: the test needs both outcomes often.
    const std::vector<double> p0 = dist(std::span<const float>(target).subspan(0, V));
    std::vector<float> draft;
    double keep = 0.0;
    for (int attempt = 0; attempt < 100 && !(keep >= 0.1 && keep <= 0.9); ++attempt) {
      draft.assign(target.begin(), target.begin() + k * V);
      for (float& x : draft) x += normals(rng, 1, 1.0f + 0.05f * float(attempt))[0];
      const std::vector<double> q0 = dist(std::span<const float>(draft).subspan(0, V));
      keep = 0.0;
      for (size_t x = 0; x < V; ++x) keep += std::min(p0[x], q0[x]);
    }
    ASSERT_TRUE(keep >= 0.1 && keep <= 0.9) << keep;
    const int n_trials = 100000;
    std::vector<std::vector<int64_t>> count(k + 1, std::vector<int64_t>(V, 0));
    std::vector<int64_t> reached(k + 1, 0);
    int64_t kept_first = 0;
    for (int t = 0; t < n_trials; ++t) {
      std::vector<int32_t> drafts;
      for (size_t i = 0; i < k; ++i) drafts.push_back(rule.draw_draft(std::span<const float>(draft).subspan(i * V, V)));
      const Verdict v = rule.verify(target, drafts, draft);
      ASSERT_EQ(v.tokens.size(), size_t(v.n_accepted) + 1);
      for (size_t i = 0; i < v.tokens.size(); ++i) {
        ++reached[i];
        ++count[i][size_t(v.tokens[i].id)];
      }
      kept_first += v.n_accepted > 0;
    }
    for (size_t i = 0; i <= k; ++i) {
      ASSERT_GT(reached[i], 1000) << "too few trials reached token " << i;
      expect_follows(dist(std::span<const float>(target).subspan(i * V, V)), count[i], reached[i],
                     "token " + std::to_string(i) + " T=" + std::to_string(params.temperature) +
                         " top_k=" + std::to_string(params.top_k) + " top_p=" + std::to_string(params.top_p) +
                         " min_p=" + std::to_string(params.min_p));
    }
    const double f = double(kept_first) / n_trials, sigma = std::sqrt(keep * (1 - keep) / n_trials);
    EXPECT_LE(std::abs(f - keep), 5.0 * sigma + 1.0 / n_trials) << "acceptance of the first draft";
  }
}

// ---- the scheduler against a scripted backend ----

constexpr int64_t kVocab = 16;
constexpr int32_t kEos = 1;

uint64_t hash_ids(std::span<const int32_t> ids, uint64_t salt) {
  uint64_t h = 1469598103934665603ull ^ salt;
  for (int32_t v : ids) h = (h ^ uint64_t(v)) * 1099511628211ull;
  return h;
}

struct SpecSeq : test::PooledSequence {
  using PooledSequence::PooledSequence;
  void reset() override {
    PooledSequence::reset();
    mtp = 0;
  }
  int64_t mtp = 0;  // the MTP block's position (model/forward.h protocol)
};

// Main-model logits after `ids`: random normals keyed by the ids (EOS far below them, until it
// peaks once a sequence holds `eos_after` ids). Draft logits: the same plus noise keyed by the ids, so the draft agrees often
// but not always (noise 0: always). Checks the protocol's preconditions and throws when broken.
class SpecForward : public test::PooledForward<SpecSeq> {
 public:
  SpecForward(int64_t block_tokens, int64_t blocks, int64_t slots, int64_t ctx, uint64_t salt)
      : PooledForward(kVocab, kEos, block_tokens, blocks, slots, ctx), salt_(salt) {}
  float noise = 1.0f;
  int64_t eos_after = 0;
  bool device = false;
  bool drafts = true;
  int64_t verify_rows = 0;    // rows of forwards with mtp and all_logits (verify steps)
  int64_t max_step_rows = 0;  // the most rows one forward call carried
  int64_t draft_calls = 0;

  std::vector<float> target(std::span<const int32_t> ids) const {
    std::mt19937_64 g(hash_ids(ids, salt_));
    std::vector<float> l = normals(g, kVocab, 2.0f);
    l[kEos] = eos_after > 0 && int64_t(ids.size()) >= eos_after ? 20.0f : -20.0f;
    return l;
  }
  std::vector<float> draft_logits(std::span<const int32_t> ids) const {
    std::vector<float> l = target(ids);
    std::mt19937_64 g(hash_ids(ids, salt_ + 7));
    const std::vector<float> n = normals(g, kVocab, 1.0f);
    for (int64_t v = 0; v < kVocab; ++v) l[size_t(v)] += noise * n[size_t(v)];
    return l;
  }

  bool samples_on_device() const override { return device; }
  bool can_draft() const override { return drafts; }

  void forward(std::span<ForwardItem> batch, const TraceHook*) override {
    int64_t rows = 0;
    for (const ForwardItem& it : batch) rows += int64_t(it.tokens.size());
    max_step_rows = std::max(max_step_rows, rows);
    for (ForwardItem& it : batch) {
      auto& s = static_cast<SpecSeq&>(*it.seq);
      const int64_t P = s.position(), T = int64_t(it.tokens.size());
      if (P + T > info_.max_context) fail("past the context");
      if (!reserve(s, P + T)) fail("forward past the reserved blocks");
      if (it.mtp && s.mtp != P && s.mtp != P - 1) fail("the MTP block is at ", s.mtp, ", the sequence at ", P);
      s.ids.insert(s.ids.end(), it.tokens.begin(), it.tokens.end());
      if (it.mtp) s.mtp = P + T - 1;
      if (it.mtp && it.all_logits) verify_rows += T;
      const int64_t first = it.all_logits ? 0 : T - 1;
      if (it.logits) it.logits->clear();
      for (int64_t r = first; r < T; ++r) {
        const std::vector<float> l = target(std::span<const int32_t>(s.ids).first(size_t(P + r + 1)));
        if (it.logits) it.logits->insert(it.logits->end(), l.begin(), l.end());
        if (it.sample) {
          if (it.sample->temperature != 0.0f) fail("the scripted device samples greedily only");
          if (it.sampled_rows) it.sampled_rows[r] = argmax(l);
          if (r == T - 1 && it.sampled) *it.sampled = argmax(l);
        }
      }
    }
  }
  void draft(std::span<DraftItem> items) override {
    ++draft_calls;
    for (DraftItem& d : items) {
      auto& s = static_cast<SpecSeq&>(*d.seq);
      const int64_t P = s.position();
      if (s.mtp != P - 1) fail("draft: the MTP block is at ", s.mtp, ", the sequence at ", P);
      if (d.n_draft < 1 || d.n_draft > kMaxSpeculative) fail("draft: n_draft ", d.n_draft);
      std::vector<int32_t> h = s.ids;
      h.push_back(d.token);
      d.drafts->clear();
      if (d.logits) d.logits->clear();
      for (int i = 0; i < d.n_draft; ++i) {
        const std::vector<float> q = draft_logits(h);
        const int32_t x = d.choose ? d.choose(q) : argmax(q);
        d.drafts->push_back(x);
        if (d.logits) d.logits->insert(d.logits->end(), q.begin(), q.end());
        h.push_back(x);
      }
      s.mtp = P;
    }
  }
  void rollback(SequenceState& seq, int64_t n) override {
    auto& s = static_cast<SpecSeq&>(seq);
    if (n > s.position() || n < s.position() - (kMaxSpeculative + 1))
      fail("rollback from ", s.position(), " to ", n);
    s.ids.resize(size_t(n));
    s.mtp = std::min(s.mtp, std::max<int64_t>(n - 1, 0));
    const int64_t keep = info_.blocks_for(n);
    if (int64_t(s.blocks.size()) > keep) {
      std::vector<int32_t> extra(s.blocks.begin() + keep, s.blocks.end());
      s.blocks.resize(size_t(keep));
      pool_.give_blocks(extra);
    }
  }

 private:
  uint64_t salt_;
};

struct Job {
  std::vector<int32_t> prompt;
  int64_t max_tokens = 0;
  std::vector<int32_t> stop_ids;
  int64_t stop_string_after = 0;  // > 0: on_token returns false at this many tokens
  SamplingParams sampling;
};

struct Got {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  RequestOutcome outcome;
  bool finished = false;
};

Request make_request(const Job& j, Got* out) {
  Request r;
  r.prompt = j.prompt;
  r.sampling = j.sampling;
  r.max_tokens = j.max_tokens;
  r.stop_ids = j.stop_ids;
  const int64_t stop_after = j.stop_string_after;
  r.on_token = [out, stop_after](const SampleResult& s) {
    out->ids.push_back(s.id);
    out->logprobs.push_back(s.logprob);
    return stop_after == 0 || int64_t(out->ids.size()) < stop_after;
  };
  r.on_finish = [out](const RequestOutcome& o) {
    EXPECT_FALSE(out->finished) << "on_finish twice";
    out->outcome = o;
    out->finished = true;
  };
  return r;
}

std::vector<Got> run_jobs(SpecForward& f, const std::vector<Job>& jobs, SchedulerOptions o) {
  std::vector<Got> got(jobs.size());
  Scheduler s(f, o);
  for (size_t i = 0; i < jobs.size(); ++i) s.submit(make_request(jobs[i], &got[i]));
  s.run_until_idle();
  for (const Got& g : got) EXPECT_TRUE(g.finished);
  return got;
}

void expect_same_output(const std::vector<Got>& spec, const std::vector<Got>& plain, const std::string& what) {
  ASSERT_EQ(spec.size(), plain.size());
  for (size_t i = 0; i < spec.size(); ++i) {
    EXPECT_EQ(spec[i].ids, plain[i].ids) << what << ": request " << i;
    EXPECT_EQ(spec[i].outcome.finish, plain[i].outcome.finish) << what << ": request " << i;
    EXPECT_EQ(spec[i].outcome.stop_id, plain[i].outcome.stop_id) << what << ": request " << i;
    EXPECT_EQ(spec[i].outcome.n_generated, plain[i].outcome.n_generated) << what << ": request " << i;
    ASSERT_EQ(spec[i].logprobs.size(), plain[i].logprobs.size());
    for (size_t t = 0; t < spec[i].logprobs.size(); ++t)
      if (!std::isnan(plain[i].logprobs[t]) && !std::isnan(spec[i].logprobs[t])) {
        EXPECT_EQ(spec[i].logprobs[t], plain[i].logprobs[t]) << what;
      }
  }
}

SamplingParams greedy() {
  SamplingParams p;
  p.temperature = 0.0f;
  return p;
}

std::vector<int32_t> random_prompt(std::mt19937_64& rng, int64_t n) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (auto& v : p) v = 2 + int32_t(rng() % uint64_t(kVocab - 2));
  return p;
}

SpeculativeCounts totals(const std::vector<Got>& got) {
  SpeculativeCounts c;
  for (const Got& g : got) c += g.outcome.speculative;
  return c;
}

TEST(SpeculativeScheduler, GreedyOutputEqualsPlainGreedyInBatches) {
  std::mt19937_64 rng(test::seed_for_this_test());
  const uint64_t salt = rng();
  std::vector<Job> jobs(60);
  for (Job& j : jobs) {
    j.prompt = random_prompt(rng, 1 + int64_t(rng() % 30));
    j.max_tokens = 1 + int64_t(rng() % 40);
    if (rng() % 3 == 0) j.stop_ids = {2 + int32_t(rng() % (kVocab - 2))};
    j.sampling = greedy();
    if (rng() % 4 == 0) j.sampling.top_logprobs = 2;
  }
  SpecForward plain_f(4, 1 << 14, 64, 512, salt);
  plain_f.eos_after = 45;
  SchedulerOptions o;
  o.max_running = 16;
  o.max_step_tokens = 24;  // prefill chunks next to verify rows, drafts cut by the budget at times
  const std::vector<Got> plain = run_jobs(plain_f, jobs, o);
  EXPECT_EQ(plain_f.draft_calls, 0);
  for (int k = 1; k <= kMaxSpeculative; ++k) {
    SpecForward f(4, 1 << 14, 64, 512, salt);
    f.eos_after = 45;
    o.speculative = k;
    Scheduler probe(f, o);  // options accepted
    const std::vector<Got> spec = run_jobs(f, jobs, o);
    expect_same_output(spec, plain, "k=" + std::to_string(k));
    const SpeculativeCounts c = totals(spec);
    EXPECT_GT(c.accepted, 0) << "no draft was ever kept: the test does not test acceptance";
    EXPECT_LT(c.accepted, c.drafted) << "no draft was ever rejected: the test does not test rollback";
    EXPECT_GT(f.verify_rows, 0);
    EXPECT_EQ(f.kv_cache().free_blocks, f.kv_cache().total_blocks);
    EXPECT_EQ(f.kv_cache().free_sequences, f.kv_cache().max_sequences);
    std::printf("[speculative] k=%d: %lld/%lld drafts kept, mean accepted length %.2f\n", k,
                (long long)c.accepted, (long long)c.drafted, c.mean_accepted_length());
  }
}

// Noise 0: the draft always agrees, so every verify emits k + 1 tokens and a stop rule can fall
// on any of them. Nothing may be emitted past it, and a borrowed sequence must hold exactly what
// it holds without speculation.
TEST(SpeculativeScheduler, StopRulesHoldWhenSeveralTokensComeAtOnce) {
  std::mt19937_64 rng(test::seed_for_this_test());
  const uint64_t salt = rng();
  const std::vector<int32_t> prompt = random_prompt(rng, 5);
  // The plain continuation, to place stops inside a verify's tokens.
  SpecForward probe(4, 4096, 16, 64, salt);
  std::vector<Got> base = run_jobs(probe, {{prompt, 40, {}, 0, greedy()}}, {});
  const std::vector<int32_t>& cont = base[0].ids;
  ASSERT_EQ(cont.size(), 40u);
  std::vector<Job> jobs;
  for (int64_t n = 1; n <= 9; ++n) jobs.push_back({prompt, n, {}, 0, greedy()});             // max_tokens
  for (size_t at = 1; at < 9; ++at) {
    // A stop id first sampled at token `at` (ids earlier in the output would stop sooner).
    if (std::find(cont.begin(), cont.begin() + at, cont[at]) == cont.begin() + at)
      jobs.push_back({prompt, 40, {cont[at]}, 0, greedy()});
  }
  for (int64_t n = 1; n <= 9; ++n) jobs.push_back({prompt, 40, {}, n, greedy()});            // stop string
  jobs.push_back({prompt, 1000, {}, 0, greedy()});  // the context cap (64) ends it

  // Outputs, and the positions the borrowed sequences hold afterwards.
  auto run = [&](int k, SpecForward& f, std::vector<int64_t>& held) {
    SchedulerOptions o;
    o.speculative = k;
    std::vector<Got> got = run_jobs(f, jobs, o);
    // EOS at a chosen length, and borrowed sequences (chat): what they hold afterwards.
    for (int64_t eos = 7; eos <= 12; ++eos) {
      f.eos_after = eos;
      Scheduler s(f, o);
      auto seq = f.new_sequence(64);
      Got g;
      Request r = make_request({prompt, 40, {}, 0, greedy()}, &g);
      r.seq = seq.get();
      s.submit(std::move(r));
      s.run_until_idle();
      held.push_back(seq->position());
      got.push_back(g);
    }
    f.eos_after = 0;
    return got;
  };
  SpecForward plain_f(4, 4096, 16, 64, salt);
  std::vector<int64_t> plain_held;
  const std::vector<Got> plain = run(0, plain_f, plain_held);
  for (int k = 1; k <= kMaxSpeculative; ++k) {
    SpecForward f(4, 4096, 16, 64, salt);
    f.noise = 0.0f;
    std::vector<int64_t> held;
    const std::vector<Got> spec = run(k, f, held);
    expect_same_output(spec, plain, "k=" + std::to_string(k));
    EXPECT_EQ(held, plain_held) << "the positions borrowed sequences hold, k=" << k;
    EXPECT_EQ(totals(spec).accepted, totals(spec).drafted);  // noise 0: every draft kept
    // No draft past what the request may still emit: with every draft kept, each verify emits its
    // drafts + 1 in full, so after the prefill's token they add up to at most max_tokens − 1.
    for (size_t i = 0; i < 9; ++i) {
      const SpeculativeCounts& c = spec[i].outcome.speculative;
      EXPECT_LE(c.accepted + c.verify_steps, int64_t(i)) << "max_tokens " << i + 1 << ", k=" << k;
    }
    EXPECT_EQ(f.kv_cache().free_blocks, f.kv_cache().total_blocks);
  }
  EXPECT_EQ(plain.back().outcome.finish, FinishReason::kEos);
  EXPECT_EQ(plain[jobs.size() - 1].outcome.finish, FinishReason::kLength);
  EXPECT_EQ(plain[jobs.size() - 1].ids.size(), 64u - prompt.size());
}

TEST(SpeculativeScheduler, PreemptedSpeculatingSequencesRecomputeExactly) {
  std::mt19937_64 rng(test::seed_for_this_test());
  const uint64_t salt = rng();
  std::vector<Job> jobs;
  for (int i = 0; i < 4; ++i) jobs.push_back({random_prompt(rng, 6), 30, {}, 0, greedy()});
  SpecForward plain_f(4, 1 << 12, 8, 64, salt);
  const std::vector<Got> plain = run_jobs(plain_f, jobs, {});
  for (int k = 1; k <= kMaxSpeculative; ++k) {
    // 14 blocks of 4 tokens: four sequences growing to ~36 tokens cannot all fit.
    SpecForward f(4, 14, 8, 64, salt);
    SchedulerOptions o;
    o.max_step_tokens = 10;
    o.speculative = k;
    const std::vector<Got> spec = run_jobs(f, jobs, o);
    expect_same_output(spec, plain, "k=" + std::to_string(k));
    int64_t preempted = 0;
    for (const Got& g : spec) preempted += g.outcome.n_preempted;
    EXPECT_GT(preempted, 0) << "the pool was never short: the test does not test preemption";
    // Four sequences of 1 + k rows pass the budget for k = 3: their drafts are cut to fit it.
    EXPECT_LE(f.max_step_rows, o.max_step_tokens) << "k=" << k;
    EXPECT_EQ(f.kv_cache().free_blocks, 14);
  }
}

TEST(SpeculativeScheduler, DeviceGreedyVerifiesWithSampledRows) {
  std::mt19937_64 rng(test::seed_for_this_test());
  const uint64_t salt = rng();
  std::vector<Job> jobs;
  for (int i = 0; i < 12; ++i) jobs.push_back({random_prompt(rng, 1 + int64_t(rng() % 9)), 25, {}, 0, greedy()});
  SpecForward plain_f(4, 1 << 12, 16, 128, salt);
  const std::vector<Got> plain = run_jobs(plain_f, jobs, {});
  SpecForward f(4, 1 << 12, 16, 128, salt);
  f.device = true;
  SchedulerOptions o;
  o.speculative = kMaxSpeculative;
  const std::vector<Got> spec = run_jobs(f, jobs, o);
  expect_same_output(spec, plain, "device");
  for (const Got& g : spec)
    for (float lp : g.logprobs) EXPECT_TRUE(std::isnan(lp)) << "the device path reports no logprob";
  EXPECT_GT(totals(spec).accepted, 0);
}

// The joint distribution of the first three sampled tokens equals the product of the main model's
// filtered conditionals, whatever the drafts were (sampling transforms on, drafts disagree often).
TEST(SpeculativeScheduler, SampledOutputKeepsItsDistribution) {
  std::mt19937_64 rng(test::seed_for_this_test());
  const uint64_t salt = rng();
  const std::vector<int32_t> prompt = random_prompt(rng, 3);
  const std::vector<SamplingParams> configs = {{0.9f, 0, 1.0f, 0.0f}, {1.1f, 10, 0.9f, 0.0f}};
  for (SamplingParams params : configs) {
    for (int k : {1, kMaxSpeculative}) {
      SpecForward f(16, 1 << 16, 512, 64, salt);
      // Drafts noisier than the default, so that both acceptance and rejection are common for
      // every salt: with noise 1 the kept share ran 0.90–0.94 and missed the < 0.9 check below for
      // some seeds (DSV4_TEST_SEED=1355502825093600960); with 2 it ran 0.29–0.76 over 16 seeds.
      f.noise = 2.0f;
      const int n_requests = 40000;
      SchedulerOptions o;
      o.max_running = 512;
      o.max_step_tokens = 4096;
      o.speculative = k;
      o.max_waiting = n_requests;
      std::vector<Job> jobs(static_cast<size_t>(n_requests));
      for (int i = 0; i < n_requests; ++i) {
        jobs[size_t(i)] = {prompt, 3, {}, 0, params};
        jobs[size_t(i)].sampling.seed = rng();
      }
      // EOS is an ordinary id here: nothing ends a request before its 3 tokens but the length.
      std::vector<Got> got(jobs.size());
      {
        Scheduler s(f, o);
        for (size_t i = 0; i < jobs.size(); ++i) {
          Request r = make_request(jobs[i], &got[i]);
          r.ignore_eos = true;
          s.submit(std::move(r));
        }
        s.run_until_idle();
      }
      // Cells: the 3-token sequences, id a·V² + b·V + c.
      std::vector<int64_t> count(size_t(kVocab * kVocab * kVocab), 0);
      std::vector<std::vector<int64_t>> count_at(3, std::vector<int64_t>(kVocab, 0));
      for (const Got& g : got) {
        ASSERT_EQ(g.ids.size(), 3u);
        ++count[size_t((g.ids[0] * kVocab + g.ids[1]) * kVocab + g.ids[2])];
        for (size_t t = 0; t < 3; ++t) ++count_at[t][size_t(g.ids[t])];
      }
      const Sampler transforms(params);
      auto cond = [&](std::vector<int32_t> h) {
        std::vector<double> p(kVocab, 0.0);
        for (const TokenProb& t : transforms.filtered_distribution(f.target(h))) p[size_t(t.id)] = t.p;
        return p;
      };
      std::vector<int32_t> h = prompt;
      const std::vector<double> p1 = cond(h);
      std::vector<double> joint(count.size(), 0.0);
      std::vector<std::vector<double>> marginal(3, std::vector<double>(kVocab, 0.0));
      for (int32_t a = 0; a < kVocab; ++a) {
        if (p1[size_t(a)] == 0.0) continue;
        std::vector<int32_t> ha = h;
        ha.push_back(a);
        const std::vector<double> p2 = cond(ha);
        for (int32_t b = 0; b < kVocab; ++b) {
          if (p2[size_t(b)] == 0.0) continue;
          std::vector<int32_t> hb = ha;
          hb.push_back(b);
          const std::vector<double> p3 = cond(hb);
          for (int32_t c = 0; c < kVocab; ++c) {
            const double want = p1[size_t(a)] * p2[size_t(b)] * p3[size_t(c)];
            joint[size_t((a * kVocab + b) * kVocab + c)] = want;
            marginal[0][size_t(a)] += want;
            marginal[1][size_t(b)] += want;
            marginal[2][size_t(c)] += want;
          }
        }
      }
      const std::string what = "k=" + std::to_string(k) + " T=" + std::to_string(params.temperature);
      expect_follows(joint, count, n_requests, what + " joint");
      // Each position's marginal: many draws per cell, so a small bias shows here first.
      for (size_t t = 0; t < 3; ++t)
        expect_follows(marginal[t], count_at[t], n_requests, what + " token " + std::to_string(t));
      const int64_t cells = std::count_if(joint.begin(), joint.end(), [](double p) { return p > 0.0; });
      const SpeculativeCounts c = totals(got);
      EXPECT_GT(c.accepted, c.drafted / 10) << "the drafts are never kept: the test does not test acceptance";
      EXPECT_LT(c.accepted, c.drafted * 9 / 10) << "the drafts are always kept: the test does not test rejection";
      std::printf("[speculative] T=%.1f top_k=%d top_p=%.1f k=%d: %lld cells, %.3f of drafts kept\n",
                  params.temperature, params.top_k, params.top_p, k, (long long)cells, c.acceptance_rate());
    }
  }
}

TEST(SpeculativeScheduler, OptionsAreChecked) {
  SpecForward f(4, 64, 4, 64, 1);
  SchedulerOptions o;
  o.speculative = kMaxSpeculative + 1;
  EXPECT_THROW(Scheduler(f, o), Error);
  o.speculative = -1;
  EXPECT_THROW(Scheduler(f, o), Error);
  f.drafts = false;  // no MTP block
  o.speculative = 1;
  EXPECT_THROW(Scheduler(f, o), Error);
  o.speculative = 0;
  Scheduler ok(f, o);
}

}  // namespace
}  // namespace dsv4
