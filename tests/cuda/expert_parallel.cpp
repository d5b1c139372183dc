// Expert and tensor parallelism on one GPU (issue 16; layer_pass.h, collective.h). The trained nano
// model run as EP = 2, 3 and 4 loopback virtual ranks, and through the one-rank NCCL path, gives
// logits bit-identical to one plain rank — prefill chunks and decode rows of several sequences in
// the same steps, across CSA/HCA window closings, eager passes and replayed decode graphs, and the
// MTP block's draft logits. Bit-identity is the claim because every routed output reaches the
// combine unchanged (a collective sums one rank's value with +0 from the others, exactly) and the
// combine adds them in the same expert-id order as one rank. With attention split by heads too
// (TP = 2) it is not promised: wo_b's K sum is cut into FP32 partials added after the GEMMs, a
// reassociation of the same sum. On nano it measures bit-identical (the split falls where the GEMM
// already adds 128-wide partials); on the Flash stack it differs less than a rounding-only change
// does (scripts/gpu_expert_parallel.sh, bench/results). The test holds TP to the bar issue 12 set
// for such differences (top-1 ≥ 99.5 % of rows, every row's cosine ≥ 0.9999) and prints how far
// it is.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_forward.h"
#include "model/config.h"
#include "support/seed.h"
#include "test_options.h"
#include "util/error.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

const fs::path kNano = fs::path(DSV4_SOURCE_DIR) / "models/nano";

// compute-sanitizer runs (scripts/gpu_suite.sh) set DSV4_CUDA_FORWARD_T to shorten the work.
int64_t cap(int64_t full) {
  const char* env = std::getenv("DSV4_CUDA_FORWARD_T");
  return env ? std::min<int64_t>(full, std::atoll(env)) : full;
}

struct Layout {
  const char* name;
  int ep;
  CudaOptions::Comm comm;
  int tp = 1;
};

std::unique_ptr<Forward> nano(const Layout& l, bool graph, bool draft) {
  CudaOptions o = test::cuda_test_options();
  o.max_sequences = 8;
  o.kv_cache_tokens = 16 * 1024;  // per rank: four ranks' pools on one card stay small
  o.ep = l.ep;
  o.tp = l.tp;
  o.comm = l.comm;
  o.use_graph = graph;
  o.draft = draft;
  return make_cuda_forward(kNano, o);
}

class ExpertParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
  }
};

// Everything a run returns, in order: every logit row of every step, and the drafts' logits.
struct Outputs {
  std::vector<float> logits;
  std::vector<int32_t> drafts;
};

// Three sequences of different lengths: prompts in chunks (one long enough to be its own matmul
// call, two short ones sharing slices), then decode steps of all three together — with `mtp` the
// MTP block runs along and each sequence drafts two tokens after every step.
Outputs teacher_forced(Forward& f, const std::vector<std::vector<int32_t>>& prompts, int decode_steps, bool mtp) {
  Outputs run;
  std::vector<std::unique_ptr<SequenceState>> seqs;
  for (const auto& p : prompts) seqs.push_back(f.new_sequence(int64_t(p.size()) + decode_steps + 4));
  std::vector<std::vector<float>> out(prompts.size());
  // Prefill: every prompt in chunks of 97 tokens, all sequences' chunks in the same forward calls.
  for (size_t at = 0;; at += 97) {
    std::vector<ForwardItem> items;
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (at >= prompts[i].size() - 1) continue;  // the last prompt token is the first decode input
      const size_t n = std::min<size_t>(97, prompts[i].size() - 1 - at);
      ForwardItem it;
      it.seq = seqs[i].get();
      it.tokens = std::span(prompts[i]).subspan(at, n);
      it.all_logits = true;
      it.logits = &out[i];
      it.mtp = mtp;
      items.push_back(it);
    }
    if (items.empty()) break;
    f.forward(items);
    for (const ForwardItem& it : items) run.logits.insert(run.logits.end(), it.logits->begin(), it.logits->end());
  }
  // Decode: each sequence's next input is its prompt's last token, then a fixed pseudo-random walk
  // (teacher forcing: the inputs do not depend on the logits, so every layout feeds the same ids).
  std::mt19937 walk(7);
  std::vector<int32_t> next(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) next[i] = prompts[i].back();
  for (int step = 0; step < decode_steps; ++step) {
    std::vector<ForwardItem> items(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      items[i].seq = seqs[i].get();
      items[i].tokens = std::span(&next[i], 1);
      items[i].logits = &out[i];
      items[i].mtp = mtp;
    }
    f.forward(items);
    for (const ForwardItem& it : items) run.logits.insert(run.logits.end(), it.logits->begin(), it.logits->end());
    if (mtp) {
      std::vector<std::vector<int32_t>> drafts(prompts.size());
      std::vector<std::vector<float>> draft_logits(prompts.size());
      std::vector<DraftItem> d(prompts.size());
      for (size_t i = 0; i < prompts.size(); ++i) {
        d[i].seq = seqs[i].get();
        d[i].token = int32_t(walk() % uint32_t(f.config().vocab_size));
        d[i].n_draft = 2;
        d[i].drafts = &drafts[i];
        d[i].logits = &draft_logits[i];
      }
      f.draft(d);
      for (size_t i = 0; i < prompts.size(); ++i) {
        run.drafts.insert(run.drafts.end(), drafts[i].begin(), drafts[i].end());
        run.logits.insert(run.logits.end(), draft_logits[i].begin(), draft_logits[i].end());
        next[i] = d[i].token;  // the token the drafts started from is the next input
      }
    } else {
      for (int32_t& t : next) t = int32_t(walk() % uint32_t(f.config().vocab_size));
    }
  }
  return run;
}

std::vector<std::vector<int32_t>> random_prompts(uint64_t seed, int64_t V) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> prompts;
  for (const int64_t len : {cap(300), cap(41), cap(130)}) {
    std::vector<int32_t> p(size_t(std::max<int64_t>(len, 2)));
    for (int32_t& t : p) t = int32_t(rng() % uint64_t(V));
    prompts.push_back(std::move(p));
  }
  return prompts;
}

void expect_same_run(const Outputs& want, const Outputs& got, const std::string& what) {
  ASSERT_EQ(want.logits.size(), got.logits.size()) << what;
  size_t differ = 0, first = want.logits.size();
  for (size_t i = 0; i < want.logits.size(); ++i)
    if (std::memcmp(&want.logits[i], &got.logits[i], sizeof(float)) != 0 && differ++ == 0) first = i;
  EXPECT_EQ(differ, 0u) << what << ": " << differ << " of " << want.logits.size()
                        << " logits differ in their bits, the first at " << first;
  EXPECT_EQ(want.drafts, got.drafts) << what;
}

const Layout kOneRank{"one rank", 1, CudaOptions::Comm::kAuto};
const Layout kLayouts[] = {
    {"EP=2 loopback", 2, CudaOptions::Comm::kLoopback},
    {"EP=3 loopback (uneven: 5/5/6 experts)", 3, CudaOptions::Comm::kLoopback},
    {"EP=4 loopback", 4, CudaOptions::Comm::kLoopback},
    {"one-rank NCCL", 1, CudaOptions::Comm::kNccl},
};

TEST_F(ExpertParallel, RanksGiveTheLogitsOfOneRank) {
  const uint64_t seed = test::seed_for("ExpertParallel.Ranks");
  for (const bool graph : {false, true}) {
    const std::unique_ptr<Forward> one = nano(kOneRank, graph, false);
    const auto prompts = random_prompts(seed, one->config().vocab_size);
    const Outputs want = teacher_forced(*one, prompts, int(cap(48)), false);
    for (const Layout& l : kLayouts) {
      const std::unique_ptr<Forward> f = nano(l, graph, false);
      expect_same_run(want, teacher_forced(*f, prompts, int(cap(48)), false),
                      std::string(l.name) + (graph ? ", decode graphs" : ", eager"));
    }
  }
}

// Logit rows of V: share of rows whose argmax agrees, the smallest row cosine, bit-identical rows.
struct RowAgreement {
  double top1 = 0, min_cosine = 1;
  size_t rows = 0, identical = 0;
};
RowAgreement agreement(const std::vector<float>& a, const std::vector<float>& b, int64_t V) {
  RowAgreement r;
  r.rows = a.size() / size_t(V);
  size_t same_top1 = 0;
  for (size_t i = 0; i < r.rows; ++i) {
    const float* x = a.data() + i * size_t(V);
    const float* y = b.data() + i * size_t(V);
    same_top1 += std::max_element(x, x + V) - x == std::max_element(y, y + V) - y;
    r.identical += std::memcmp(x, y, size_t(V) * sizeof(float)) == 0;
    double xy = 0, xx = 0, yy = 0;
    for (int64_t j = 0; j < V; ++j) {
      xy += double(x[j]) * y[j];
      xx += double(x[j]) * x[j];
      yy += double(y[j]) * y[j];
    }
    r.min_cosine = std::min(r.min_cosine, xy / std::sqrt(xx * yy));
  }
  r.top1 = double(same_top1) / double(r.rows);
  return r;
}

TEST_F(ExpertParallel, TensorParallelAttentionAgreesWithOneRank) {
  const uint64_t seed = test::seed_for("ExpertParallel.Tensor");
  const Layout tp2{"EP=2 TP=2 loopback", 2, CudaOptions::Comm::kLoopback, 2};
  for (const bool graph : {false, true}) {
    const std::unique_ptr<Forward> one = nano(kOneRank, graph, false);
    const int64_t V = one->config().vocab_size;
    const auto prompts = random_prompts(seed, V);
    const Outputs want = teacher_forced(*one, prompts, int(cap(48)), false);
    const std::unique_ptr<Forward> f = nano(tp2, graph, false);
    const Outputs got = teacher_forced(*f, prompts, int(cap(48)), false);
    ASSERT_EQ(want.logits.size(), got.logits.size());
    const RowAgreement r = agreement(want.logits, got.logits, V);
    std::printf("[tp] %s%s: %zu rows, top-1 %.4f, min cosine %.7f, %zu bit-identical\n", tp2.name,
                graph ? ", decode graphs" : ", eager", r.rows, r.top1, r.min_cosine, r.identical);
    EXPECT_GE(r.top1, 0.995);
    EXPECT_GE(r.min_cosine, 0.9999);
  }
}

TEST_F(ExpertParallel, DraftsGiveTheLogitsOfOneRank) {
  const uint64_t seed = test::seed_for("ExpertParallel.Drafts");
  const std::unique_ptr<Forward> one = nano(kOneRank, true, true);
  ASSERT_TRUE(one->can_draft());
  const auto prompts = random_prompts(seed, one->config().vocab_size);
  const Outputs want = teacher_forced(*one, prompts, int(cap(24)), true);
  for (const Layout& l : {kLayouts[0], kLayouts[2]}) {
    const std::unique_ptr<Forward> f = nano(l, true, true);
    expect_same_run(want, teacher_forced(*f, prompts, int(cap(24)), true), std::string(l.name) + ", with MTP drafts");
  }
}

TEST_F(ExpertParallel, RefusesWhatCannotRun) {
  CudaOptions o = test::cuda_test_options();
  o.ep = 17;  // nano has 16 routed experts
  o.comm = CudaOptions::Comm::kLoopback;
  EXPECT_THROW(make_cuda_forward(kNano, o), Error);
  o.ep = 4;
  o.tp = 4;  // nano has 2 attention output groups
  EXPECT_THROW(make_cuda_forward(kNano, o), Error);
  o.tp = 2;  // attention over some of the ranks only
  EXPECT_THROW(make_cuda_forward(kNano, o), Error);
  o.tp = 1;
  o.ep = 0;  // auto: the fewest GPUs that hold the model, which says nothing about virtual ranks
  EXPECT_THROW(make_cuda_forward(kNano, o), Error);
  int n_dev = 0;
  DSV4_CUDA_CHECK(cudaGetDeviceCount(&n_dev));
  o.ep = n_dev + 1;  // NCCL ranks need a device each
  o.comm = CudaOptions::Comm::kAuto;
  if (o.ep <= 8) {
    try {
      make_cuda_forward(kNano, o);
      ADD_FAILURE() << "EP over more ranks than devices was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("devices"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace dsv4
