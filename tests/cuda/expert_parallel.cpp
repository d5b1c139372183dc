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

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_forward.h"
#include "model/config.h"
#include "support/seed.h"
#include "teacher_forcing.h"
#include "test_options.h"
#include "util/error.h"

namespace dsv4 {
namespace {

using test::agreement;
using test::cap;
using test::expect_same_run;
using test::Outputs;
using test::random_prompts;
using test::RowAgreement;
using test::teacher_forced;

namespace fs = std::filesystem;

const fs::path kNano = fs::path(DSV4_SOURCE_DIR) / "models/nano";

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
