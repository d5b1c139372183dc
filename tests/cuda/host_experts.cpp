// The host tier on one GPU (issue 17; cuda/host_experts.h): the trained nano model with some of
// every layer's 16 routed experts kept in host memory and computed by the host's cores, against
// all of them on the GPU — prefill chunks and decode rows of several sequences in the same steps,
// eager passes and replayed decode graphs, the MTP block's drafts. Decode rows run the host's
// experts on the host's cores; prefill passes (≥ kHostStreamRows rows) copy them to the GPU and
// run the grouped GEMM there, which is the GPU's own arithmetic.
//
// What is promised. On the host's cores the host computes its experts with the CPU backend's expert
// (cpu/moe.h expert_forward, official-bf16: the GPU's quantisation points and BF16 stores), whose
// FP4 GEMV is bit-identical to the scalar dequantiser (tests/cpu/test_fp4_linear.cpp). The GPU's
// grouped GEMM adds the same products in another order, so an expert's BF16 output may differ by a
// rounding step where a sum falls near a BF16 boundary. Such a difference usually stays a
// rounding-only difference (issue 12's bar for those: top-1 ≥ 99.5 % of logit rows, a row's cosine
// ≥ 0.9999), but now and then it meets a near tie of a discrete choice downstream (expert top-k,
// indexer top-k, an FP8 scale) and the rows after it in that sequence move further. Measured over
// 81 seeds on an H100 (bench/results/2026-12-07-h100-host-tier-seeds.md): 76 gave every row of the
// four runs bit-identical; 5 had 583 to 611 of 612 rows identical; in 2 of those
// (15112150753777659586, 9987271028536447736) one or two rows fell below 0.9999 (min cosine 0.99968
// and 0.99698), each time in one sequence; top-1 was 1.0000 in all. So the bar is: top-1 ≥ 99.5 %,
// and the rows below 0.9999 at most 5 % of the rows and all in one sequence of the three (a flip
// can reach only the rest of its own sequence: here at most 56 rows, 9 %, that the cores run). A
// wrong host path (a wrong expert, row, scale or weight) reaches the decode rows of every sequence,
// which all pick the host's experts. Within the host tier, a replayed graph gives the eager pass's
// logits bit for bit (the host's work is the same function on the same inputs, its order fixed).
// With --host-decode gpu the GPU runs the decode rows' host experts too, so the logits are
// bit-identical; with split the cores and the GPU each run a share of them, so the bar is the
// cores' again.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_forward.h"
#include "model/config.h"
#include "support/seed.h"
#include "random_nano.h"
#include "teacher_forcing.h"
#include "test_options.h"
#include "util/error.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

const fs::path kNano = fs::path(DSV4_SOURCE_DIR) / "models/nano";

// cores_share: CudaOptions::host_cores_share (1: --host-decode cpu, 0: gpu, in between: split).
std::unique_ptr<Forward> load(const fs::path& dir, int cpu_experts, bool graph, bool draft, double cores_share) {
  CudaOptions o = test::cuda_test_options();
  o.max_sequences = 8;
  o.kv_cache_tokens = 16 * 1024;
  o.cpu_experts = cpu_experts;
  o.use_graph = graph;
  o.draft = draft;
  o.host_cores_share = cores_share;
  return make_cuda_forward(dir, o);
}

std::unique_ptr<Forward> nano(int cpu_experts, bool graph, bool draft, double cores_share = 1.0) {
  return load(kNano, cpu_experts, graph, draft, cores_share);
}

class HostTier : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
  }
};

// The cores' bar (header): top-1, and rows below the rounding-only cosine few and in one sequence.
void expect_close(const test::Outputs& want, const test::Outputs& got, int64_t V, const std::string& what) {
  ASSERT_EQ(want.logits.size(), got.logits.size()) << what;
  ASSERT_EQ(want.row_sequence, got.row_sequence) << what;
  const test::RowAgreement r = test::agreement(want.logits, got.logits, V);
  constexpr double kRoundingOnly = 0.9999;
  size_t below = 0;
  std::vector<int32_t> sequences;  // with a row below kRoundingOnly
  for (size_t i = 0; i < r.rows; ++i) {
    if (r.cosine[i] >= kRoundingOnly) continue;
    ++below;
    if (std::find(sequences.begin(), sequences.end(), want.row_sequence[i]) == sequences.end())
      sequences.push_back(want.row_sequence[i]);
  }
  std::printf("[host] %s: %zu rows, top-1 %.4f, min cosine %.7f, %zu bit-identical, %zu below %.4f in %zu sequences\n",
              what.c_str(), r.rows, r.top1, r.min_cosine, r.identical, below, kRoundingOnly, sequences.size());
  EXPECT_GE(r.top1, 0.995) << what;
  EXPECT_LE(double(below), 0.05 * double(r.rows)) << what;
  EXPECT_LE(sequences.size(), 1u) << what;
}

TEST_F(HostTier, AgreesWithEveryExpertOnTheGpu) {
  const uint64_t seed = test::seed_for("HostTier.Agrees");
  for (const bool graph : {false, true}) {
    const std::unique_ptr<Forward> gpu = nano(0, graph, false);
    const int64_t V = gpu->config().vocab_size;
    const auto prompts = test::random_prompts(seed, V);
    const test::Outputs want = test::teacher_forced(*gpu, prompts, int(test::cap(48)), false);
    EXPECT_EQ(gpu->host_tier().host_experts, 0);
    for (const int host : {4, 15}) {
      const std::unique_ptr<Forward> f = nano(host, graph, false);
      const test::Outputs got = test::teacher_forced(*f, prompts, int(test::cap(48)), false);
      const HostTierInfo info = f->host_tier();
      EXPECT_EQ(info.host_experts, host);
      EXPECT_EQ(info.experts, 16);
      // Both ways ran (the comparison below is not vacuous): decode rows on the host's cores,
      // prefill passes of many rows with the host's experts copied to the GPU.
      EXPECT_GT(info.calls, 0);
      EXPECT_GT(info.picks, 0);
      EXPECT_GT(info.streamed, 0);
      expect_close(want, got, V, std::to_string(host) + " of 16 experts on the host" + (graph ? ", decode graphs" : ", eager"));
    }
  }
}

TEST_F(HostTier, GraphReplayEqualsEager) {
  const uint64_t seed = test::seed_for("HostTier.Graph");
  const std::unique_ptr<Forward> eager = nano(6, false, false);
  const auto prompts = test::random_prompts(seed, eager->config().vocab_size);
  const test::Outputs want = test::teacher_forced(*eager, prompts, int(test::cap(48)), false);
  const std::unique_ptr<Forward> graph = nano(6, true, false);
  test::expect_same_run(want, test::teacher_forced(*graph, prompts, int(test::cap(48)), false),
                        "host tier, decode graphs vs eager");
}

TEST_F(HostTier, DraftsAgreeWithEveryExpertOnTheGpu) {
  const uint64_t seed = test::seed_for("HostTier.Drafts");
  const std::unique_ptr<Forward> gpu = nano(0, true, true);
  ASSERT_TRUE(gpu->can_draft());
  const int64_t V = gpu->config().vocab_size;
  const auto prompts = test::random_prompts(seed, V);
  const test::Outputs want = test::teacher_forced(*gpu, prompts, int(test::cap(24)), true);
  const std::unique_ptr<Forward> f = nano(8, true, true);
  const test::Outputs got = test::teacher_forced(*f, prompts, int(test::cap(24)), true);
  expect_close(want, got, V, "8 of 16 experts on the host, with MTP drafts");
}

// --host-decode gpu: decode rows' host experts run in the GPU's grouped GEMM, reading the weights
// from pinned host memory. It is the kernel that runs them when they are on the GPU, and its rows do
// not depend on what else a launch holds (tests/cuda/moe_grouped_gemm.cpp), so the logits are those of
// every expert on the GPU bit for bit: eager and replayed, with the MTP block's drafts.
TEST_F(HostTier, GpuDecodeEqualsEveryExpertOnTheGpu) {
  const uint64_t seed = test::seed_for("HostTier.GpuDecode");
  for (const bool graph : {false, true}) {
    const std::unique_ptr<Forward> gpu = nano(0, graph, true);
    const auto prompts = test::random_prompts(seed, gpu->config().vocab_size);
    const test::Outputs want = test::teacher_forced(*gpu, prompts, int(test::cap(24)), true);
    const std::unique_ptr<Forward> f = nano(6, graph, true, 0.0);
    const test::Outputs got = test::teacher_forced(*f, prompts, int(test::cap(24)), true);
    const HostTierInfo info = f->host_tier();
    EXPECT_EQ(info.core_experts, 0);
    EXPECT_EQ(info.calls, 0) << "a decode row ran on the host's cores";
    EXPECT_GT(info.streamed, 0) << "no prefill pass copied the host's experts up";
    test::expect_same_run(want, got, std::string("host tier decoded by the GPU from host memory, ") +
                                         (graph ? "decode graphs" : "eager") + ", vs every expert on the GPU");
  }
}

// The same with NVFP4 experts (§11.6: E4M3 per-16 scales and a per-expert F32 global scale, which
// the decode gather copies as its own 4-byte region): nano's shapes, fresh random weights.
TEST_F(HostTier, GpuDecodeEqualsEveryExpertOnTheGpuNvfp4) {
  const uint64_t seed = test::seed_for_this_test();  // printed; DSV4_TEST_SEED replays it
  const test::ScratchDir scratch = test::write_random_nano("host-nvfp4", test::nvfp4_experts_quantization(), seed);
  const fs::path& dir = scratch.path();
  ASSERT_EQ(ModelConfig::load(dir).expert_format, ExpertFormat::kNVFP4);
  for (const bool graph : {false, true}) {
    const std::unique_ptr<Forward> gpu = load(dir, 0, graph, false, 1.0);
    const auto prompts = test::random_prompts(seed, gpu->config().vocab_size);
    const test::Outputs want = test::teacher_forced(*gpu, prompts, int(test::cap(24)), false);
    const std::unique_ptr<Forward> f = load(dir, 6, graph, false, 0.0);
    const test::Outputs got = test::teacher_forced(*f, prompts, int(test::cap(24)), false);
    EXPECT_EQ(f->host_tier().calls, 0) << "a decode row ran on the host's cores";
    test::expect_same_run(want, got, std::string("NVFP4 host tier decoded by the GPU, ") +
                                         (graph ? "decode graphs" : "eager") + ", vs every expert on the GPU");
  }
}

// --host-decode split: a decode pass's picks of the host's 4 highest experts run on its cores while
// the GPU copies the other 4 picked over the bus and runs them, both within one MoE sub-layer. Each
// pick is computed by one of the two ways tested above, so the bar is the cores'; a replayed graph
// still gives the eager pass's logits bit for bit.
TEST_F(HostTier, SplitDecodeAgreesWithEveryExpertOnTheGpu) {
  const uint64_t seed = test::seed_for_this_test();  // printed; DSV4_TEST_SEED replays it
  const std::unique_ptr<Forward> gpu = nano(0, true, false);
  const int64_t V = gpu->config().vocab_size;
  const auto prompts = test::random_prompts(seed, V);
  const test::Outputs want = test::teacher_forced(*gpu, prompts, int(test::cap(48)), false);
  test::Outputs eager;
  for (const bool graph : {false, true}) {
    const std::unique_ptr<Forward> f = nano(8, graph, false, 0.5);
    const test::Outputs got = test::teacher_forced(*f, prompts, int(test::cap(48)), false);
    const HostTierInfo info = f->host_tier();
    EXPECT_EQ(info.host_experts, 8);
    EXPECT_EQ(info.core_experts, 4);
    // The cores ran decode picks (of experts 12..15 only: the bus took 8..11 in the same passes).
    EXPECT_GT(info.calls, 0);
    EXPECT_GT(info.picks, 0);
    expect_close(want, got, V, std::string("split decode, 4 + 4 of 16 experts on the host, ") +
                                   (graph ? "decode graphs" : "eager"));
    if (graph)
      test::expect_same_run(eager, got, "split decode, decode graphs vs eager");
    else
      eager = got;
  }
}

// Forward::set_host_cores_share (`dsv4 bench --host-cpu-shares`): one load decodes in each mode in
// turn, each with its own logits — over the bus those of every expert on the GPU bit for bit, on the
// cores and split to the cores' bar — so the decode graphs were captured again for each split.
TEST_F(HostTier, SwitchesTheDecodeModeOnOneLoad) {
  const uint64_t seed = test::seed_for_this_test();  // printed; DSV4_TEST_SEED replays it
  const std::unique_ptr<Forward> gpu = nano(0, true, false);
  const int64_t V = gpu->config().vocab_size;
  const auto prompts = test::random_prompts(seed, V);
  const test::Outputs want = test::teacher_forced(*gpu, prompts, int(test::cap(24)), false);
  const std::unique_ptr<Forward> f = nano(8, true, false, 1.0);
  for (const double share : {1.0, 0.0, 0.5, 0.0}) {
    f->set_host_cores_share(share);
    const HostTierInfo before = f->host_tier();
    EXPECT_EQ(before.core_experts, share == 1.0 ? 8 : share == 0.0 ? 0 : 4);
    const test::Outputs got = test::teacher_forced(*f, prompts, int(test::cap(24)), false);
    const int64_t calls = f->host_tier().calls - before.calls;
    const std::string what = "switched to a cores' share of " + std::to_string(share);
    if (share == 0.0) {
      EXPECT_EQ(calls, 0) << what << ": a decode row ran on the host's cores";
      test::expect_same_run(want, got, what + ", vs every expert on the GPU");
    } else {
      EXPECT_GT(calls, 0) << what;
      expect_close(want, got, V, what);
    }
  }
  EXPECT_THROW(f->set_host_cores_share(1.5), Error);
  EXPECT_THROW(gpu->set_host_cores_share(1.0), Error) << "no host tier to switch";
}

TEST_F(HostTier, RefusesWhatCannotRun) {
  CudaOptions o = test::cuda_test_options();
  o.cpu_experts = 16;  // nano has 16 routed experts: the GPU keeps at least one
  EXPECT_THROW(make_cuda_forward(kNano, o), Error);
  o.cpu_experts = -7;
  EXPECT_THROW(make_cuda_forward(kNano, o), Error);
  o.cpu_experts = 1;
  o.host_cores_share = 0.5;  // one host expert cannot be split between the bus and the cores
  EXPECT_THROW(make_cuda_forward(kNano, o), Error);
  o.host_cores_share = 1.0;
  o.cpu_experts = 4;
  o.ep = 2;  // the host tier runs beside one GPU
  o.comm = CudaOptions::Comm::kLoopback;
  EXPECT_THROW(make_cuda_forward(kNano, o), Error);
}

// auto keeps every expert on the GPU when they fit (nano fits any card many times over).
TEST_F(HostTier, AutoKeepsEveryExpertOnTheGpuWhenTheyFit) {
  CudaOptions o = test::cuda_test_options();
  o.cpu_experts = CudaOptions::kAutoCpuExperts;
  EXPECT_EQ(make_cuda_forward(kNano, o)->host_tier().host_experts, 0);
}

}  // namespace
}  // namespace dsv4
