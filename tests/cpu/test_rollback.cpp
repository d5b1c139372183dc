// Speculative-decoding state on the CPU backend (model/forward.h's protocol): a sequence that
// verifies drafts, rejects some and rolls back gives logits, MTP drafts and draft logits
// bit-identical to a sequence that was only ever fed the accepted tokens — across CSA closings
// (every 4), HCA closings (127, 255), the indexer's key windows and the window ring's wrap — on
// random tiny checkpoints and on nano; the KV blocks follow the position; misuse is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "cpu/cpu_forward.h"
#include "model/config.h"
#include "util/error.h"
#include "support/sanitizer.h"
#include "support/speculative_plan.h"
#include "support/test_util.h"
#include "support/tiny_model.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

using Step = test::SpeculativeStep;
using Plan = test::SpeculativePlan;

// What a run produced that must not depend on the rejected tokens.
struct Record {
  std::vector<std::vector<float>> logits;        // per step: rows 0 … accept
  std::vector<std::vector<int32_t>> drafts;      // per step (and the prompt's)
  std::vector<std::vector<float>> draft_logits;  // per step (and the prompt's)
};

std::vector<float> forward_rows(Forward& f, SequenceState& seq, std::span<const int32_t> tokens) {
  std::vector<float> logits;
  ForwardItem item;
  item.seq = &seq;
  item.tokens = tokens;
  item.all_logits = true;
  item.logits = &logits;
  item.mtp = true;
  f.forward(std::span<ForwardItem>(&item, 1));
  return logits;
}

void draft_into(Forward& f, SequenceState& seq, int32_t token, int n, Record& r) {
  std::vector<int32_t> drafts;
  std::vector<float> logits;
  DraftItem d;
  d.seq = &seq;
  d.token = token;
  d.n_draft = n;
  d.drafts = &drafts;
  d.logits = &logits;
  f.draft(std::span<DraftItem>(&d, 1));
  EXPECT_EQ(drafts.size(), size_t(n));
  EXPECT_EQ(logits.size(), size_t(n) * size_t(f.config().vocab_size));
  r.drafts.push_back(drafts);
  r.draft_logits.push_back(logits);
}

// The KV blocks a sequence holds follow its position (rollback gives back whole blocks past it).
void expect_blocks_follow(Forward& f, const SequenceState& seq) {
  const KvCacheInfo kv = f.kv_cache();
  EXPECT_EQ(kv.total_blocks - kv.free_blocks, kv.blocks_for(seq.position())) << "at " << seq.position();
}

// speculative: feeds every step's drafts, rolls back, drafts; else feeds only the accepted tokens.
Record run(Forward& f, const Plan& p, bool speculative) {
  auto seq = f.new_sequence(int64_t(p.truth.size()));
  const int64_t V = f.config().vocab_size;
  Record r;
  forward_rows(f, *seq, std::span<const int32_t>(p.truth.data(), size_t(p.prompt)));
  int64_t P = p.prompt;
  draft_into(f, *seq, p.truth[size_t(P)], p.steps.empty() ? 1 : p.steps[0].n_draft, r);
  for (size_t i = 0; i < p.steps.size(); ++i) {
    const Step& s = p.steps[i];
    const int64_t keep = s.accept + 1;
    std::vector<float> logits;
    if (speculative) {
      logits = forward_rows(f, *seq, s.fed);
      EXPECT_EQ(seq->position(), P + int64_t(s.fed.size()));
      f.rollback(*seq, P + keep);
      logits.resize(size_t(keep * V));
    } else {
      logits = forward_rows(f, *seq, std::span<const int32_t>(p.truth.data() + P, size_t(keep)));
    }
    P += keep;
    EXPECT_EQ(seq->position(), P);
    expect_blocks_follow(f, *seq);
    r.logits.push_back(std::move(logits));
    const int n_next = i + 1 < p.steps.size() ? p.steps[i + 1].n_draft : 2;
    draft_into(f, *seq, p.truth[size_t(P)], n_next, r);
  }
  return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void expect_identical(const Record& spec, const Record& ref, const std::string& what) {
  ASSERT_EQ(spec.logits.size(), ref.logits.size());
  ASSERT_EQ(spec.drafts.size(), ref.drafts.size());
  for (size_t i = 0; i < spec.logits.size(); ++i)
    ASSERT_TRUE(same_bits(spec.logits[i], ref.logits[i])) << what << ": verify logits differ at step " << i;
  for (size_t i = 0; i < spec.drafts.size(); ++i) {
    ASSERT_EQ(spec.drafts[i], ref.drafts[i]) << what << ": drafts differ after step " << i;
    ASSERT_TRUE(same_bits(spec.draft_logits[i], ref.draft_logits[i])) << what << ": draft logits differ after step " << i;
  }
}

struct Variant {
  const char* name;
  bool quantised;
  Numerics numerics;
  int64_t window;  // sliding_window: 8 wraps the ring (W + the rollback margin) every 12 positions
};

class RollbackTest : public ::testing::TestWithParam<Variant> {};

// 300 positions: HCA closes at 127 and 255, the indexer is selective (index_topk 16 < 75 keys).
// Positions a plan covers: 300 crosses both HCA closings (127, 255). Under the sanitizers, 140
// crosses the first only (the release run covers the second), which halves these tests' time there.
int64_t plan_length(const std::string& what) {
  if (!test::kSanitizerBuild) return 300;
  test::note_left_out("rollback " + what + ": positions 140..299 (the HCA closing at 255)");
  return 140;
}

TEST_P(RollbackTest, RejectedDraftsLeaveNoTrace) {
  const Variant v = GetParam();
  test::TinyModelOptions opt;
  opt.quantised = v.quantised;
  opt.salt = 40 + uint64_t(v.window);
  opt.edit_config = [&](nlohmann::json& j) { j["sliding_window"] = v.window; };
  const test::ScratchDir dir = test::write_tiny_model(opt);
  CpuOptions co;
  co.numerics = v.numerics;
  co.n_threads = 2;
  auto f = make_cpu_forward(dir.path(), co);
  ASSERT_TRUE(f->can_draft());
  test::Rng rng(test::seed_for_this_test());
  const int64_t n = plan_length(v.name);
  const Plan plan = test::make_speculative_plan(rng, n, 1 + rng.integer(0, 20), opt.vocab);
  int64_t rejected = 0;
  for (const Step& s : plan.steps) rejected += int64_t(s.fed.size()) - 1 - s.accept;
  ASSERT_GT(rejected, n / 6) << "the plan rejects too little to test anything";
  expect_identical(run(*f, plan, true), run(*f, plan, false), v.name);
}

INSTANTIATE_TEST_SUITE_P(
    Cpu, RollbackTest,
    ::testing::Values(Variant{"bf16_exact", false, Numerics::kExact, 128},
                      Variant{"quant_official", true, Numerics::kOfficial, 128},
                      Variant{"quant_official_bf16_window8", true, Numerics::kOfficialBf16, 8}),
    [](const auto& info) { return std::string(info.param.name); });

// The trained model: its MTP block drafts real tokens; a prompt from validation-like random ids.
TEST(Rollback, NanoRejectedDraftsLeaveNoTrace) {
  CpuOptions co;
  co.numerics = Numerics::kOfficial;
  co.n_threads = 2;
  auto f = make_cpu_forward(fs::path(DSV4_SOURCE_DIR) / "models" / "nano", co);
  ASSERT_TRUE(f->can_draft());
  test::Rng rng(test::seed_for_this_test());
  const Plan plan =
      test::make_speculative_plan(rng, plan_length("nano"), 1 + rng.integer(0, 40), f->config().vocab_size);
  expect_identical(run(*f, plan, true), run(*f, plan, false), "nano");
}

TEST(Rollback, MisuseIsRefused) {
  test::TinyModelOptions opt;
  opt.salt = 47;
  const test::ScratchDir dir = test::write_tiny_model(opt);
  CpuOptions co;
  co.n_threads = 2;
  auto f = make_cpu_forward(dir.path(), co);
  test::Rng rng(test::seed_for_this_test());
  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back(int32_t(rng.integer(2, opt.vocab - 1)));
  auto seq = f->new_sequence(64);
  std::vector<int32_t> drafts;
  DraftItem d{seq.get(), ids[20], 2, nullptr, &drafts, nullptr};

  // No forward with mtp yet: nothing to draft from.
  forward_rows(*f, *seq, std::span<const int32_t>(ids.data(), 10));
  EXPECT_THROW(f->rollback(*seq, 11), Error);  // past the position
  EXPECT_THROW(f->rollback(*seq, 5), Error);   // more than kMaxSpeculative + 1 back
  f->rollback(*seq, 10 - kMaxSpeculative - 1);  // exactly as far back as allowed
  EXPECT_EQ(seq->position(), 10 - kMaxSpeculative - 1);
  // Fed again one position: the floor stays where the furthest feed put it.
  forward_rows(*f, *seq, std::span<const int32_t>(ids.data() + seq->position(), 1));
  EXPECT_THROW(f->rollback(*seq, 10 - kMaxSpeculative - 2), Error);

  d.token = ids[size_t(seq->position())];
  f->draft(std::span<DraftItem>(&d, 1));
  EXPECT_EQ(drafts.size(), 2u);
  EXPECT_THROW(f->draft(std::span<DraftItem>(&d, 1)), Error);  // the MTP block already holds P − 1
  DraftItem bad = d;
  bad.n_draft = kMaxSpeculative + 1;
  EXPECT_THROW(f->draft(std::span<DraftItem>(&bad, 1)), Error);
  bad.n_draft = 1;
  bad.token = int32_t(opt.vocab);
  EXPECT_THROW(f->draft(std::span<DraftItem>(&bad, 1)), Error);

  // A forward without mtp leaves the MTP block two behind after the next one: refused.
  std::vector<float> logits;
  ForwardItem plain{seq.get(), std::span<const int32_t>(ids.data() + seq->position(), 2), false, &logits};
  f->forward(std::span<ForwardItem>(&plain, 1));
  EXPECT_THROW(forward_rows(*f, *seq, std::span<const int32_t>(ids.data() + seq->position(), 1)), Error);
  // reset() starts over, MTP included.
  seq->reset();
  forward_rows(*f, *seq, std::span<const int32_t>(ids.data(), 12));
  d.token = ids[12];
  f->draft(std::span<DraftItem>(&d, 1));
  EXPECT_EQ(drafts.size(), 2u);
}

TEST(Rollback, ACheckpointWithoutMtpCannotDraft) {
  test::TinyModelOptions opt;
  opt.salt = 48;
  opt.edit_config = [](nlohmann::json& j) {
    j["num_nextn_predict_layers"] = 0;
    j["compress_ratios"].erase(j["compress_ratios"].size() - 1);
  };
  const test::ScratchDir dir = test::write_tiny_model(opt);
  auto f = make_cpu_forward(dir.path(), CpuOptions{});
  EXPECT_FALSE(f->can_draft());
  auto seq = f->new_sequence(8);
  const std::vector<int32_t> ids = {3, 4, 5};
  EXPECT_THROW(forward_rows(*f, *seq, ids), Error);
  std::vector<int32_t> drafts;
  DraftItem d{seq.get(), 3, 1, nullptr, &drafts, nullptr};
  EXPECT_THROW(f->draft(std::span<DraftItem>(&d, 1)), Error);
}

}  // namespace
}  // namespace dsv4
