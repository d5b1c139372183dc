// run_expert_rows (cpu/expert_units.h), the host tier's way of computing a layer's experts, on
// fresh random MXFP4 experts whose sizes leave a partial unit of rows in both sweeps: every
// output bit-identical to expert_forward (cpu/moe.h) in each numerics mode, with and without
// routing weights, for experts of one to several rows.
#include <gtest/gtest.h>

#include <bit>
#include <random>
#include <vector>

#include "cpu/expert_units.h"
#include "cpu/fp4_linear_rate.h"
#include "cpu/moe.h"
#include "support/test_util.h"

namespace dsv4 {
namespace {

TEST(ExpertUnits, EqualExpertForwardBitForBit) {
  test::Rng rng(test::seed_for_this_test());
  std::mt19937_64 bytes(uint64_t(rng.integer(0, INT64_MAX)));
  // D and I: whole MXFP4 blocks, not whole units of kExpertUnitRows (a partial unit in each sweep).
  const int64_t D = 32 * rng.integer(9, 20), I = 32 * rng.integer(5, 13);
  const int n_experts = int(rng.integer(2, 5));
  std::vector<RandomFp4Matrix> mats;
  for (int e = 0; e < n_experts; ++e) {
    mats.push_back(random_fp4_matrix(bytes, WeightFormat::kMXFP4, I, D));
    mats.push_back(random_fp4_matrix(bytes, WeightFormat::kMXFP4, I, D));
    mats.push_back(random_fp4_matrix(bytes, WeightFormat::kMXFP4, D, I));
  }
  std::vector<ExpertWeights> experts(static_cast<size_t>(n_experts));
  for (int e = 0; e < n_experts; ++e) experts[size_t(e)] = {mats[size_t(3 * e)].w, mats[size_t(3 * e + 1)].w,
                                                            mats[size_t(3 * e + 2)].w};
  ModelConfig cfg;
  cfg.swiglu_limit = rng.uniform(2.0f, 8.0f);  // some h values clamp
  ThreadPool pool(3);
  for (Numerics mode : {Numerics::kExact, Numerics::kOfficial, Numerics::kOfficialBf16}) {
    const CpuContext ctx{cfg, NumericsPoints::from(mode), pool};
    std::vector<ExpertRows> work(static_cast<size_t>(n_experts));
    for (int e = 0; e < n_experts; ++e) {
      ExpertRows& w = work[size_t(e)];
      w.weights = &experts[size_t(e)];
      w.n = rng.integer(1, 6);
      w.x = rng.normals(size_t(w.n * D), rng.uniform(0.05f, 0.5f));
      expert_act_quant(ctx, w.x.data(), w.n, D);
      if (e % 2 == 0) {
        w.row_weight.resize(size_t(w.n));
        for (float& v : w.row_weight) v = rng.uniform(0.05f, 2.0f);
      }
    }
    run_expert_rows(ctx, work);
    for (const ExpertRows& w : work) {
      std::vector<float> want(size_t(w.n * D));
      expert_forward(ctx, *w.weights, w.x.data(), w.n, w.row_weight.empty() ? nullptr : w.row_weight.data(),
                     want.data());
      ASSERT_EQ(w.y.size(), want.size());
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(w.y[i]), std::bit_cast<uint32_t>(want[i]))
            << "mode " << int(mode) << " D " << D << " I " << I << " rows " << w.n << " at " << i << ": " << w.y[i]
            << " vs " << want[i];
    }
  }
}

}  // namespace
}  // namespace dsv4
