// Synthetic weights (CudaOptions::synthetic_seed, issue 16): a sparse skeleton (headers only, every
// data region a hole) uploaded with the values RandomTensors generates for a seed is the same
// model as the random checkpoint `make-skeleton --random` writes for that seed — the device holds
// the same bytes and the logits are bit-identical — on nano's shapes (FP8 linears, MXFP4 experts,
// hash and score routing, CSA and HCA layers, the MTP block). The generator itself is checked
// against the written skeleton byte for byte in tests/model/test_skeleton_random.cpp.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_forward.h"
#include "cuda/device_model.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/known_configs.h"
#include "model/model_summary.h"
#include "model/skeleton.h"
#include "model/weights.h"
#include "support/scratch_dir.h"
#include "support/seed.h"
#include "test_options.h"
#include "util/error.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

const fs::path kRoot = fs::path(DSV4_SOURCE_DIR);

// Logits of every position of `tokens`, fed in chunks of 37 (several passes, CSA/HCA closings),
// then three drafts and their logits from the last position (the MTP block's weights too).
struct Outputs {
  std::vector<float> logits, draft_logits;
  std::vector<int32_t> drafts;
};
Outputs run(Forward& f, const std::vector<int32_t>& tokens) {
  Outputs r;
  auto seq = f.new_sequence(int64_t(tokens.size()) + kMaxSpeculative + 1);
  for (size_t t0 = 0; t0 < tokens.size(); t0 += 37) {
    const size_t n = std::min<size_t>(37, tokens.size() - t0);
    std::vector<float> out;
    ForwardItem item;
    item.seq = seq.get();
    item.tokens = std::span<const int32_t>(tokens.data() + t0, n);
    item.all_logits = true;
    item.logits = &out;
    item.mtp = true;
    f.forward(std::span<ForwardItem>(&item, 1));
    r.logits.insert(r.logits.end(), out.begin(), out.end());
  }
  DraftItem d{seq.get(), tokens.back(), kMaxSpeculative, nullptr, &r.drafts, &r.draft_logits};
  f.draft(std::span<DraftItem>(&d, 1));
  return r;
}

TEST(CudaSyntheticWeights, SparseSkeletonEqualsTheRandomCheckpoint) {
  if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
  std::ifstream in(kRoot / "models/nano/config.json");
  const std::string config = nlohmann::json::parse(in).dump();
  const uint64_t seed = test::seed_for_this_test();  // printed; DSV4_TEST_SEED replays it
  const test::ScratchDir random_dir("dsv4-synthetic-random-"), sparse_dir("dsv4-synthetic-sparse-");
  write_skeleton(random_dir.path(), config, {.random_seed = seed});
  write_skeleton(sparse_dir.path(), config, {});

  CudaOptions o = test::cuda_test_options();
  o.draft = true;
  auto from_files = make_cuda_forward(random_dir.path(), o);
  o.synthetic_seed = seed;
  auto synthetic = make_cuda_forward(sparse_dir.path(), o);
  // A sparse skeleton without synthetic values uploads zeros: a different model.
  CudaOptions zero = test::cuda_test_options();
  zero.draft = true;
  auto zeros = make_cuda_forward(sparse_dir.path(), zero);

  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(300);
  for (auto& t : tokens) t = int32_t(rng() % uint64_t(from_files->config().vocab_size));
  const Outputs a = run(*from_files, tokens), b = run(*synthetic, tokens), z = run(*zeros, tokens);
  ASSERT_EQ(a.logits.size(), tokens.size() * size_t(from_files->config().vocab_size));
  ASSERT_EQ(a.logits.size(), b.logits.size());
  EXPECT_EQ(std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * sizeof(float)), 0)
      << "the synthetic upload computes other logits than the random checkpoint of the same seed";
  EXPECT_EQ(a.drafts, b.drafts);
  ASSERT_EQ(a.draft_logits.size(), b.draft_logits.size());
  EXPECT_EQ(std::memcmp(a.draft_logits.data(), b.draft_logits.data(), a.draft_logits.size() * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(a.logits.data(), z.logits.data(), a.logits.size() * sizeof(float)), 0)
      << "the comparison cannot tell the random weights from the skeleton's zeros";
}

// Issue 16: inspect's plan (split_weight_bytes) and the actual upload (device_weight_bytes, the
// same walk that allocates) agree on the bytes of one GPU, on the full-size Flash layout as a
// sparse skeleton (headers only): with the MTP block exactly, plus the two RoPE inverse-frequency
// tables the upload computes (2 × qk_rope_head_dim/2 floats); without it (no --speculative), less
// exactly the mtp.* tensors, which is the plan without them (what the fit error uses then).
// Host-only: it runs without a GPU.
TEST(CudaWeightBytes, UploadCountsWhatInspectPlans) {
  const test::ScratchDir dir("dsv4-flash-skeleton-bytes-");
  write_skeleton(dir.path(), flash_config_json(), {});
  const ModelConfig cfg = ModelConfig::load(dir.path());
  const Checkpoint ck = Checkpoint::open(dir.path());
  const ModelWeights w = bind_weights(cfg, ck);
  const WeightBytesSplit plan = split_weight_bytes(ck);
  const double rope_tables = 2.0 * double(cfg.qk_rope_head_dim / 2) * sizeof(float);
  double mtp = 0;
  for (const auto& [name, t] : ck.tensors())
    if (name.rfind("mtp.", 0) == 0) mtp += double(t.nbytes);
  ASSERT_GT(mtp, 0.0);
  const double with_mtp = double(cuda::device_weight_bytes(cfg, w, true));
  const double without = double(cuda::device_weight_bytes(cfg, w, false));
  std::printf("[bytes] flash: plan %.0f (experts %.0f), upload with MTP %.0f, without %.0f (MTP %.0f)\n",
              plan.experts + plan.other, plan.experts, with_mtp, without, mtp);
  const WeightBytesSplit plan_without = split_weight_bytes(ck, /*with_mtp=*/false);
  EXPECT_EQ(with_mtp, plan.experts + plan.other + rope_tables);
  EXPECT_EQ(without, plan.experts + plan.other + rope_tables - mtp);
  EXPECT_EQ(without, plan_without.experts + plan_without.other + rope_tables);
}

// The same agreement per GPU under expert parallelism: inspect's plan for n GPUs (gpu_plan: routed
// experts split evenly, the rest on each) and each rank's upload of its experts
// (cuda::expert_range), for the n that Flash's 256 experts allow without remainder. Host-only.
TEST(CudaWeightBytes, EachRankUploadsWhatInspectPlansPerGpu) {
  const test::ScratchDir dir("dsv4-flash-skeleton-rank-bytes-");
  write_skeleton(dir.path(), flash_config_json(), {});
  const ModelConfig cfg = ModelConfig::load(dir.path());
  const Checkpoint ck = Checkpoint::open(dir.path());
  const ModelWeights w = bind_weights(cfg, ck);
  const WeightBytesSplit split = split_weight_bytes(ck);
  const double rope_tables = 2.0 * double(cfg.qk_rope_head_dim / 2) * sizeof(float);
  const std::vector<GpuPlanRow> plan = gpu_plan(cfg, split.experts, split.other, 4096, 1e15);
  for (const GpuPlanRow& row : plan) {
    double total = 0;
    for (int r = 0; r < row.n_gpus; ++r) {
      const cuda::ExpertRange range = cuda::expert_range(int(cfg.n_routed_experts), r, row.n_gpus);
      const double rank = double(cuda::device_weight_bytes(cfg, w, true, {row.n_gpus > 1 ? range : cuda::ExpertRange{}}));
      EXPECT_EQ(rank, row.weights_per_gpu + rope_tables) << "rank " << r << " of " << row.n_gpus;
      total += rank - split.other - rope_tables;
    }
    EXPECT_EQ(total, split.experts) << row.n_gpus << " ranks: every expert byte on exactly one";
    std::printf("[bytes] flash on %d GPUs: %.3f GiB per GPU\n", row.n_gpus, row.weights_per_gpu / double(1 << 30));
  }
}

}  // namespace
}  // namespace dsv4
