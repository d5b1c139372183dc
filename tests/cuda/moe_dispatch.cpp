// Tests of kernels/moe_dispatch.cu (the MoE dispatch plan): every array bitwise against a host
// computation of the same definition (moe_dispatch.cuh: selections expert by expert, ascending
// (row, slot) inside an expert; padding rows and invalid picks left out), on routings that hurt.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cuda/kernels/moe_dispatch.cuh"
#include "op_parity.h"

namespace dsv4::cuda::test {
namespace {

struct DispatchCase {
  const char* name;
  int T, k, E;
  int n_real;         // < 0: all rows real (n_real pointer null)
  int invalid_every;  // > 0: every n-th row gets the router's −1 picks
  bool repeats;       // picks may repeat inside a row (a hash table may)
  int hot_experts;    // > 0: picks only from experts [0, hot_experts)
  // Expert parallelism: > 0: picks from [0, global_E), the plan covers this rank's E experts
  // starting at `base` (the rest are other ranks' and left out).
  int global_E = 0, base = 0;
};

class MoeDispatchTest : public CudaOpTest, public ::testing::WithParamInterface<DispatchCase> {};

TEST_P(MoeDispatchTest, MatchesHostPlan) {
  const DispatchCase& c = GetParam();
  const int n = c.T * c.k, n_real = c.n_real < 0 ? c.T : c.n_real;
  const int pool = c.hot_experts > 0 ? c.hot_experts : c.global_E > 0 ? c.global_E : c.E;
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::vector<float> wt(static_cast<size_t>(n));
  for (int t = 0; t < c.T; ++t)
    for (int i = 0; i < c.k; ++i) {
      int32_t& e = idx[size_t(t) * c.k + i];
      do e = uniform_int(0, pool - 1);
      while (!c.repeats && pool >= c.k && std::find(&idx[size_t(t) * c.k], &e, e) != &e);
      wt[size_t(t) * c.k + i] = uniform(0.0f, 2.0f);
    }
  if (c.invalid_every > 0)
    for (int t = 0; t < c.T; t += c.invalid_every)
      for (int i = 0; i < c.k; ++i) idx[size_t(t) * c.k + i] = (i % 2 == 0) ? -1 : std::max(c.E, c.global_E);  // −1 and out of range

  // Host plan, by definition.
  std::vector<int32_t> counts(size_t(c.E), 0), offsets(size_t(c.E) + 1, 0), sel_row, sel_slot, pos_of(size_t(n), -1);
  std::vector<float> sel_weight;
  for (int e = 0; e < c.E; ++e) {
    for (int t = 0; t < n_real; ++t)
      for (int i = 0; i < c.k; ++i)
        if (idx[size_t(t) * c.k + i] == c.base + e) {
          pos_of[size_t(t) * c.k + i] = int32_t(sel_row.size());
          sel_row.push_back(t);
          sel_slot.push_back(i);
          sel_weight.push_back(wt[size_t(t) * c.k + i]);
          ++counts[size_t(e)];
        }
    offsets[size_t(e) + 1] = int32_t(sel_row.size());
  }
  const size_t n_sel = sel_row.size();

  DeviceArena counting;
  MoeDispatchPlan::carve(counting, c.E, std::max(c.T, 1), c.k);
  DeviceArena arena(counting.used());
  const MoeDispatchPlan plan = MoeDispatchPlan::carve(arena, c.E, std::max(c.T, 1), c.k);
  DSV4_CUDA_CHECK(cudaMemset(plan.counts, kPoisonByte, counting.used()));  // the first carve: the arena's start
  DeviceBuffer<int32_t> d_idx(idx), d_nreal(std::vector<int32_t>{n_real});
  DeviceBuffer<float> d_wt(wt);
  MoeDispatchParams p;
  p.expert_idx = d_idx.get();
  p.expert_weight = d_wt.get();
  p.n_real = c.n_real < 0 ? nullptr : d_nreal.get();
  p.T = c.T;
  p.plan = plan;
  p.expert_base = c.base;
  launch_moe_dispatch(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());

  auto down_i = [](const int32_t* d, size_t m) {
    std::vector<int32_t> h(m);
    if (m) DSV4_CUDA_CHECK(cudaMemcpy(h.data(), d, m * 4, cudaMemcpyDeviceToHost));
    return h;
  };
  auto as_bytes = [](const auto& v) {
    std::vector<uint8_t> b(v.size() * sizeof(v[0]));
    if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
    return b;
  };
  std::vector<float> got_w(n_sel);
  if (n_sel) DSV4_CUDA_CHECK(cudaMemcpy(got_w.data(), plan.sel_weight, n_sel * 4, cudaMemcpyDeviceToHost));
  const std::string tag = cat(" ", c.name, " T=", c.T, " k=", c.k, " E=", c.E, " base=", c.base, " n_sel=", n_sel);
  expect_bytes_equal("counts" + tag, as_bytes(down_i(plan.counts, size_t(c.E))), as_bytes(counts));
  expect_bytes_equal("offsets" + tag, as_bytes(down_i(plan.offsets, size_t(c.E) + 1)), as_bytes(offsets));
  expect_bytes_equal("sel_row" + tag, as_bytes(down_i(plan.sel_row, n_sel)), as_bytes(sel_row));
  expect_bytes_equal("sel_slot" + tag, as_bytes(down_i(plan.sel_slot, n_sel)), as_bytes(sel_slot));
  expect_bytes_equal("sel_weight" + tag, as_bytes(got_w), as_bytes(sel_weight));
  expect_bytes_equal("pos_of" + tag, as_bytes(down_i(plan.pos_of, size_t(n))), as_bytes(pos_of));
}

INSTANTIATE_TEST_SUITE_P(
    Routings, MoeDispatchTest,
    ::testing::Values(
        // name, T, k, E, n_real, invalid_every, repeats, hot_experts
        DispatchCase{"one_row", 1, 6, 256, -1, 0, false, 0},
        DispatchCase{"decode_64x6", 64, 6, 256, -1, 0, false, 0},
        DispatchCase{"prefill_1024x6", 1024, 6, 256, -1, 0, false, 0},
        DispatchCase{"prefill_8192x6", 8192, 6, 256, -1, 0, false, 0},
        DispatchCase{"pro_300x6", 300, 6, 384, -1, 0, false, 0},
        DispatchCase{"all_on_one_expert", 300, 1, 256, -1, 0, false, 1},
        DispatchCase{"few_experts", 300, 2, 256, -1, 0, false, 3},
        DispatchCase{"padding_rows", 64, 6, 256, 37, 0, false, 0},
        DispatchCase{"no_real_rows", 16, 6, 256, 0, 0, false, 0},
        DispatchCase{"invalid_picks", 50, 6, 256, -1, 7, false, 0},
        DispatchCase{"hash_repeats", 200, 6, 16, -1, 0, true, 0},
        DispatchCase{"nano", 128, 4, 16, 100, 0, false, 0},
        DispatchCase{"max_experts", 40, 8, kDispatchMaxExperts, -1, 0, false, 0},
        DispatchCase{"empty_pass", 0, 6, 256, -1, 0, false, 0},
        // Expert-parallel shards: the first, a middle and the last of several ranks' ranges, with
        // padding rows and invalid picks.
        DispatchCase{"ep_first_of_4", 64, 6, 64, -1, 0, false, 0, 256, 0},
        DispatchCase{"ep_third_of_4", 300, 6, 64, 250, 7, false, 0, 256, 128},
        DispatchCase{"ep_last_of_2", 64, 6, 128, -1, 5, false, 0, 256, 128},
        DispatchCase{"ep_nano_of_3", 128, 4, 5, 100, 0, false, 0, 16, 5}),
    [](const ::testing::TestParamInfo<DispatchCase>& i) { return std::string(i.param.name); });

// Bad shapes are refused with a message, never launched.
TEST(MoeDispatchLaunch, RejectsBadShapes) {
  MoeDispatchParams p;
  p.plan.E = kDispatchMaxExperts + 1;
  p.plan.k = 6;
  p.plan.max_rows = 4;
  EXPECT_THROW(launch_moe_dispatch(p, nullptr), InternalError);
  p.plan.E = 256;
  p.T = 5;  // more rows than the plan was carved for
  EXPECT_THROW(launch_moe_dispatch(p, nullptr), InternalError);
}

}  // namespace
}  // namespace dsv4::cuda::test
