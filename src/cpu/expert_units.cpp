// run_expert_rows (expert_units.h): the two sweeps of (expert, block of output rows) units.
#include "cpu/expert_units.h"

#include <algorithm>

#include "cpu/moe.h"
#include "model/quant.h"
#include "util/error.h"

namespace dsv4 {

static_assert(kExpertUnitRows % kActBlockSize == 0);

void run_expert_rows(const CpuContext& ctx, std::span<ExpertRows> experts) {
  if (experts.empty()) return;
  const int64_t D = experts.front().weights->w1.cols, I = experts.front().weights->w1.rows;
  for (ExpertRows& e : experts) {
    DSV4_CHECK(e.weights && e.weights->w1.cols == D && e.weights->w1.rows == I && e.n >= 0);
    DSV4_CHECK(int64_t(e.x.size()) == e.n * D && (e.row_weight.empty() || int64_t(e.row_weight.size()) == e.n));
    e.h.resize(size_t(e.n * I));
    e.y.resize(size_t(e.n * D));
  }
  const int64_t hidden_units = (I + kExpertUnitRows - 1) / kExpertUnitRows;
  const int64_t output_units = (D + kExpertUnitRows - 1) / kExpertUnitRows;
  // A unit runs inline on its thread (expert_hidden's linears see a nested parallel_for).
  ctx.pool.parallel_for(int64_t(experts.size()) * hidden_units, [&](int64_t b, int64_t end) {
    for (int64_t u = b; u < end; ++u) {
      ExpertRows& e = experts[size_t(u / hidden_units)];
      const int64_t i0 = (u % hidden_units) * kExpertUnitRows, ni = std::min(kExpertUnitRows, I - i0);
      expert_hidden(ctx, *e.weights, e.x.data(), e.n, e.row_weight.empty() ? nullptr : e.row_weight.data(), i0, ni,
                    e.h.data());
      for (int64_t r = 0; r < e.n; ++r) expert_act_quant(ctx, e.h.data() + r * I + i0, 1, ni);
    }
  });
  ctx.pool.parallel_for(int64_t(experts.size()) * output_units, [&](int64_t b, int64_t end) {
    for (int64_t u = b; u < end; ++u) {
      ExpertRows& e = experts[size_t(u / output_units)];
      const int64_t d0 = (u % output_units) * kExpertUnitRows;
      expert_output(ctx, *e.weights, e.h.data(), e.n, d0, std::min(kExpertUnitRows, D - d0), e.y.data());
    }
  });
}

}  // namespace dsv4
