// Timing input for run_expert_rows (cpu/expert_units.h), shared by the host-tier benches: one MoE
// sub-layer's work over the first rows.size() of `experts`, rows[e] rows of expert e, each row
// N(0, 0.3) through the §12 activation quantisation, routing weight 0.5. Not a numerics fixture
// (tests/cpu/test_expert_units.cpp is).
#pragma once

#include <random>
#include <vector>

#include "cpu/context.h"
#include "cpu/expert_units.h"
#include "cpu/moe.h"
#include "model/weights.h"

namespace dsv4 {

inline std::vector<ExpertRows> random_expert_rows(const CpuContext& ctx, const std::vector<ExpertWeights>& experts,
                                                  const std::vector<int>& rows, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.3f);
  std::vector<ExpertRows> work(rows.size());
  for (size_t e = 0; e < work.size(); ++e) {
    const int64_t D = experts[e].w1.cols;
    work[e].weights = &experts[e];
    work[e].n = rows[e];
    work[e].x.resize(size_t(work[e].n * D));
    for (float& v : work[e].x) v = normal(rng);
    expert_act_quant(ctx, work[e].x.data(), work[e].n, D);
    work[e].row_weight.assign(size_t(work[e].n), 0.5f);
  }
  return work;
}

}  // namespace dsv4
