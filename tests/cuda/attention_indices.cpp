// Parity of kernels/attention_indices.cu against a host index list written from §4.3/§7 (and the
// CPU backend's key-set loop, src/cpu/attention.cpp): the window positions one by one, then the
// visible HCA entries or the valid CSA picks in order, −1 after. Exact integer equality, poisoned
// output, and a guard region behind the output that must stay untouched.
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <unordered_set>

#include "cuda/kernels/attention_indices.cuh"
#include "model/config.h"
#include "op_parity.h"
#include "util/error.h"

namespace dsv4::cuda::test {
namespace {

constexpr int kIndexPoisonByte = 0x5A;           // 0x5A5A5A5A: far above every slot below, and not −1
constexpr int32_t kIndexPoison = 0x5A5A5A5A;
constexpr int kGuard = 64;                       // int32s behind the output that must stay poisoned

struct IndexCase {
  const char* what;
  int ratio, window, ring, topk_k, n_q, max_pos;
  bool consecutive;  // prefill: positions p0 … p0+n_q−1; else random and boundary positions
  int n_idx;         // 0: window + the largest compressed count; > 0: this (smaller: truncation)
};

// Host reference (§7): window positions max(0, t−W+1) … t at slot position % ring, then the
// compressed entries, then −1; more than n_idx entries: the first n_idx.
std::vector<int32_t> reference_row(const IndexCase& c, int t, const int32_t* picks, int comp_base, int n_idx) {
  std::vector<int32_t> row;
  for (int s = std::max(0, t - c.window + 1); s <= t; ++s) row.push_back(s % c.ring);
  if (c.ratio == kHcaRatio)
    for (int j = 0; j < (t + 1) / kHcaRatio; ++j) row.push_back(comp_base + j);
  if (c.ratio == kCsaRatio)
    for (int i = 0; i < c.topk_k; ++i)
      if (picks[i] >= 0) row.push_back(comp_base + picks[i]);
  row.resize(size_t(n_idx), -1);
  return row;
}

class AttentionIndicesTest : public CudaOpTest, public ::testing::WithParamInterface<IndexCase> {};

TEST_P(AttentionIndicesTest, MatchesReference) {
  const auto c = GetParam();
  // Positions: in prefill a consecutive run from a random start; otherwise the boundaries
  // (0, the window edge, around multiples of 4 and 128) and uniform random positions.
  std::vector<int32_t> pos;
  if (c.consecutive) {
    const int p0 = uniform_int(0, c.max_pos - c.n_q + 1);
    for (int i = 0; i < c.n_q; ++i) pos.push_back(p0 + i);
  } else {
    std::vector<int> special = {0, 1, 2, 3, 4, 5, c.window - 2, c.window - 1, c.window, c.window + 1, 126, 127, 128,
                                129, 255, 256, 257};
    for (int k = 0; k < 4; ++k) {
      const int m4 = 4 * uniform_int(1, c.max_pos / 4), m128 = 128 * uniform_int(1, std::max(1, c.max_pos / 128));
      for (int d : {-1, 0, 1}) special.push_back(m4 + d), special.push_back(m128 + d);
    }
    std::shuffle(special.begin(), special.end(), rng);
    for (int t : special)
      if (int(pos.size()) < c.n_q / 2 && t >= 0 && t <= c.max_pos) pos.push_back(t);
    while (int(pos.size()) < c.n_q) pos.push_back(uniform_int(0, c.max_pos));
    std::shuffle(pos.begin(), pos.end(), rng);
  }
  const int max_t = *std::max_element(pos.begin(), pos.end());

  // CSA picks as the indexer leaves them: distinct visible entries (j < (t+1)/4) in score order,
  // −1 where fewer are visible than topk_k; some picks masked to −1 mid-list as well.
  std::vector<int32_t> topk;
  if (c.ratio == kCsaRatio) {
    topk.assign(size_t(c.n_q) * c.topk_k, -1);
    for (int qi = 0; qi < c.n_q; ++qi) {
      const int n_vis = (pos[size_t(qi)] + 1) / kCsaRatio, n_pick = std::min(c.topk_k, n_vis);
      std::vector<int32_t> picks;
      if (n_vis <= 4 * c.topk_k) {
        picks.resize(size_t(n_vis));
        std::iota(picks.begin(), picks.end(), 0);
        std::shuffle(picks.begin(), picks.end(), rng);
        picks.resize(size_t(n_pick));
      } else {
        std::unordered_set<int32_t> seen;
        while (int(picks.size()) < n_pick) {
          const int32_t j = uniform_int(0, n_vis - 1);
          if (seen.insert(j).second) picks.push_back(j);
        }
      }
      for (auto& j : picks)
        if (uniform_int(0, 9) == 0) j = -1;
      std::copy(picks.begin(), picks.end(), topk.begin() + int64_t(qi) * c.topk_k);
    }
  }
  const int max_comp = c.ratio == kHcaRatio ? (max_t + 1) / kHcaRatio : c.ratio == kCsaRatio ? c.topk_k : 0;
  const int n_idx = c.n_idx > 0 ? c.n_idx : c.window + max_comp;
  const int comp_base = c.ring + uniform_int(0, 100);  // decode uses comp_base = ring; any larger works

  DeviceBuffer<int32_t> d_pos(pos), d_out(size_t(c.n_q) * n_idx + kGuard);
  DeviceBuffer<int32_t> d_topk(topk);  // empty unless CSA
  d_out.fill_bytes(kIndexPoisonByte);
  AttnIndexParams p;
  p.pos = d_pos.get();
  p.topk = c.ratio == kCsaRatio ? d_topk.get() : nullptr;
  p.indices = d_out.get();
  p.n_q = c.n_q;
  p.window = c.window;
  p.ring = c.ring;
  p.comp_base = comp_base;
  p.ratio = c.ratio;
  p.topk_k = c.ratio == kCsaRatio ? c.topk_k : 0;
  p.n_idx = n_idx;
  launch_attention_indices(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = d_out.download();

  int64_t n_bad = 0, n_truncated = 0;
  for (int qi = 0; qi < c.n_q; ++qi) {
    const int t = pos[size_t(qi)];
    const auto ref = reference_row(c, t, topk.empty() ? nullptr : topk.data() + int64_t(qi) * c.topk_k, comp_base, n_idx);
    n_truncated += ref.back() >= 0;
    for (int i = 0; i < n_idx; ++i) {
      const int32_t g = got[size_t(qi) * n_idx + i], e = ref[size_t(i)];
      if (g != e && n_bad++ < 5)
        ADD_FAILURE() << c.what << ": query " << qi << " (pos " << t << ") entry " << i << ": got " << g << ", want " << e;
    }
  }
  for (int i = 0; i < kGuard; ++i) n_bad += got[size_t(c.n_q) * n_idx + i] != kIndexPoison;
  std::printf("attention_indices %s: n_q=%d n_idx=%d max_pos=%d rows_full=%lld mismatches=%lld\n", c.what, c.n_q, n_idx,
              max_t, static_cast<long long>(n_truncated), static_cast<long long>(n_bad));
  EXPECT_EQ(n_bad, 0) << c.what;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AttentionIndicesTest,
    ::testing::Values(IndexCase{"sliding", 0, 128, 128, 0, 64, 5000, false, 0},
                      IndexCase{"sliding_ring_gt_window", 0, 128, 256, 0, 64, 1000, false, 0},
                      IndexCase{"sliding_truncated", 0, 128, 128, 0, 48, 1000, false, 100},  // window cut
                      IndexCase{"hca", kHcaRatio, 128, 128, 0, 96, 3000, false, 0},
                      IndexCase{"hca_prefill", kHcaRatio, 128, 128, 0, 300, 700, true, 0},
                      IndexCase{"hca_truncated", kHcaRatio, 128, 128, 0, 48, 2000, false, 130},
                      IndexCase{"csa_nano", kCsaRatio, 128, 128, 16, 64, 700, false, 0},
                      IndexCase{"csa_nano_prefill", kCsaRatio, 128, 128, 16, 200, 400, true, 0},
                      IndexCase{"csa_flash_decode", kCsaRatio, 128, 128, 512, 1, 1 << 16, false, 0},
                      IndexCase{"csa_flash", kCsaRatio, 128, 128, 512, 16, 1 << 16, false, 0},
                      IndexCase{"csa_pro", kCsaRatio, 128, 128, 1024, 8, 1 << 20, false, 0},
                      IndexCase{"csa_truncated", kCsaRatio, 128, 128, 512, 16, 1 << 14, false, 228}),
    [](const ::testing::TestParamInfo<IndexCase>& info) { return std::string(info.param.what); });

// The launcher refuses inconsistent arguments before anything touches the device (host pointers
// suffice: the checks fire first). Host-only: runs without a GPU.
TEST(AttentionIndicesArgs, RejectsInconsistentParams) {
  std::vector<int32_t> pos(1, 0), topk(16, -1), out(256);
  auto base = [&] {
    AttnIndexParams p;
    p.pos = pos.data();
    p.indices = out.data();
    p.n_q = 1;
    p.window = 128;
    p.ring = 128;
    p.comp_base = 128;
    p.ratio = kHcaRatio;
    p.n_idx = 256;
    return p;
  };
  AttnIndexParams p = base();
  p.ratio = 5;  // not a V4 compress ratio
  EXPECT_THROW(launch_attention_indices(p, nullptr), InternalError);
  p = base();
  p.ring = 64;  // ring smaller than the window
  EXPECT_THROW(launch_attention_indices(p, nullptr), InternalError);
  p = base();
  p.comp_base = 100;  // compressed slots would alias ring slots
  EXPECT_THROW(launch_attention_indices(p, nullptr), InternalError);
  p = base();
  p.ratio = kCsaRatio;  // CSA without picks
  EXPECT_THROW(launch_attention_indices(p, nullptr), InternalError);
  p = base();
  p.topk = topk.data();  // picks on an HCA layer
  p.topk_k = 16;
  EXPECT_THROW(launch_attention_indices(p, nullptr), InternalError);
}

}  // namespace
}  // namespace dsv4::cuda::test
