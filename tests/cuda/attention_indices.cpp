// Parity of kernels/attention_indices.cu against a host index list written from §4.3/§7 (and the
// CPU backend's key-set loop, src/cpu/attention.cpp) over random multi-sequence steps: the window
// positions one by one (this pass's rows, then the slot's ring), then the visible HCA entries or
// the valid CSA picks in order through the page table, −1 after. Exact integer equality, poisoned
// output, and a guard region behind the output that must stay untouched.
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <unordered_set>

#include "cuda/kernels/attention_indices.cuh"
#include "model/config.h"
#include "op_parity.h"
#include "step_layout.h"
#include "util/error.h"

namespace dsv4::cuda::test {
namespace {

constexpr int kIndexPoisonByte = 0x5A;           // 0x5A5A5A5A: far above every slot below, and not −1
constexpr int32_t kIndexPoison = 0x5A5A5A5A;
constexpr int kGuard = 64;                       // int32s behind the output that must stay poisoned

struct IndexCase {
  const char* what;
  int ratio, window, topk_k, n_seqs, max_chunk, max_pos;
  int n_idx;         // 0: window + the largest compressed count; > 0: this (smaller: truncation)
};

// The pool layout of one layer (kv_pool.h): rings of 16 slots, then the pass's rows, then entries.
struct PoolBases {
  int ring_base, pass_base, comp_base, per_block;
};

// Host reference (§7, attention_indices.cuh): window positions max(0, t−W+1) … t — this pass's
// row when at or after the chunk's start, else the slot's ring row — then the compressed entries
// through the page table, then −1; more than n_idx entries: the first n_idx; padding: all −1.
std::vector<int32_t> reference_row(const IndexCase& c, const StepLayout& L, const PoolBases& b, int r,
                                   const int32_t* picks, int n_idx) {
  std::vector<int32_t> row;
  const int t = L.pos[size_t(r)];
  if (t >= 0) {
    const int slot = L.slot[size_t(r)], first = L.first[size_t(r)], pos0 = L.pos[size_t(first)];
    for (int p = std::max(0, t - c.window + 1); p <= t; ++p)
      row.push_back(p >= pos0 ? b.pass_base + first + (p - pos0) : b.ring_base + slot * c.window + p % c.window);
    if (c.ratio == kHcaRatio)
      for (int j = 0; j < (t + 1) / kHcaRatio; ++j) row.push_back(b.comp_base + L.entry_row(slot, j, b.per_block));
    if (c.ratio == kCsaRatio)
      for (int i = 0; i < c.topk_k; ++i)
        if (picks[i] >= 0) row.push_back(b.comp_base + L.entry_row(slot, picks[i], b.per_block));
  }
  row.resize(size_t(n_idx), -1);
  return row;
}

class AttentionIndicesTest : public CudaOpTest, public ::testing::WithParamInterface<IndexCase> {};

TEST_P(AttentionIndicesTest, MatchesReference) {
  const auto c = GetParam();
  const int kSlots = std::max(16, c.n_seqs);  // every sequence a slot of its own
  const StepLayout L = random_step_layout(rng, c.n_seqs, c.max_chunk, c.max_pos, kSlots, uniform_int(0, 3));
  const DeviceStepLayout D(L);
  const int n_rows = L.rows();
  const int max_t = *std::max_element(L.pos.begin(), L.pos.end());

  // CSA picks as the indexer leaves them: distinct visible entries (j < (t+1)/4) in score order,
  // −1 where fewer are visible than topk_k; some picks masked to −1 mid-list as well.
  std::vector<int32_t> topk;
  if (c.ratio == kCsaRatio) {
    topk.assign(size_t(n_rows) * c.topk_k, -1);
    for (int qi = 0; qi < n_rows; ++qi) {
      const int n_vis = std::max(L.pos[size_t(qi)] + 1, 0) / kCsaRatio, n_pick = std::min(c.topk_k, n_vis);
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
  PoolBases b;
  b.ring_base = uniform_int(0, 64);
  b.pass_base = b.ring_base + kSlots * c.window;
  b.comp_base = b.pass_base + n_rows + uniform_int(0, 100);
  b.per_block = c.ratio > 0 ? 256 / c.ratio : 0;

  // Launched in groups of rows (row0), as the attention step does; each group writes its own rows.
  DeviceBuffer<int32_t> d_topk(topk);  // empty unless CSA
  DeviceBuffer<int32_t> d_out(size_t(n_rows) * n_idx + kGuard);
  d_out.fill_bytes(kIndexPoisonByte);
  const int group = uniform_int(1, n_rows);
  for (int g0 = 0; g0 < n_rows; g0 += group) {
    AttnIndexParams p;
    p.rows = D.rows();
    p.row0 = g0;
    p.pages = D.table();
    p.topk = c.ratio == kCsaRatio ? d_topk.get() + int64_t(g0) * c.topk_k : nullptr;
    p.indices = d_out.get() + int64_t(g0) * n_idx;
    p.n_q = std::min(group, n_rows - g0);
    p.window = c.window;
    p.pass_base = b.pass_base;
    p.ring_base = b.ring_base;
    p.comp_base = b.comp_base;
    p.per_block = b.per_block;
    p.ratio = c.ratio;
    p.topk_k = c.ratio == kCsaRatio ? c.topk_k : 0;
    p.n_idx = n_idx;
    launch_attention_indices(p, nullptr);
  }
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = d_out.download();

  int64_t n_bad = 0, n_truncated = 0;
  for (int qi = 0; qi < n_rows; ++qi) {
    const auto ref = reference_row(c, L, b, qi, topk.empty() ? nullptr : topk.data() + int64_t(qi) * c.topk_k, n_idx);
    n_truncated += ref.back() >= 0;
    for (int i = 0; i < n_idx; ++i) {
      const int32_t g = got[size_t(qi) * n_idx + i], e = ref[size_t(i)];
      if (g != e && n_bad++ < 5)
        ADD_FAILURE() << c.what << ": row " << qi << " (pos " << L.pos[size_t(qi)] << ") entry " << i << ": got " << g
                      << ", want " << e;
    }
  }
  for (int i = 0; i < kGuard; ++i) n_bad += got[size_t(n_rows) * n_idx + i] != kIndexPoison;
  std::printf("attention_indices %s: rows=%d group=%d n_idx=%d max_pos=%d rows_full=%lld mismatches=%lld\n", c.what,
              n_rows, group, n_idx, max_t, static_cast<long long>(n_truncated), static_cast<long long>(n_bad));
  EXPECT_EQ(n_bad, 0) << c.what;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AttentionIndicesTest,
    ::testing::Values(IndexCase{"sliding", 0, 128, 0, 12, 200, 5000, 0},
                      IndexCase{"sliding_decode", 0, 128, 0, 40, 1, 5000, 0},
                      IndexCase{"sliding_truncated", 0, 128, 0, 6, 100, 1000, 100},  // window cut
                      IndexCase{"hca", kHcaRatio, 128, 0, 12, 64, 3000, 0},
                      IndexCase{"hca_prefill", kHcaRatio, 128, 0, 3, 300, 700, 0},
                      IndexCase{"hca_truncated", kHcaRatio, 128, 0, 8, 16, 2000, 130},
                      IndexCase{"csa_nano", kCsaRatio, 128, 16, 10, 40, 700, 0},
                      IndexCase{"csa_nano_prefill", kCsaRatio, 128, 16, 2, 200, 400, 0},
                      IndexCase{"csa_flash_decode", kCsaRatio, 128, 512, 64, 1, 1 << 16, 0},
                      IndexCase{"csa_flash", kCsaRatio, 128, 512, 6, 8, 1 << 16, 0},
                      IndexCase{"csa_pro", kCsaRatio, 128, 1024, 4, 4, 1 << 20, 0},
                      IndexCase{"csa_truncated", kCsaRatio, 128, 512, 6, 8, 1 << 14, 228}),
    [](const ::testing::TestParamInfo<IndexCase>& info) { return std::string(info.param.what); });

// The launcher refuses inconsistent arguments before anything touches the device (host pointers
// suffice: the checks fire first). Host-only: runs without a GPU.
TEST(AttentionIndicesArgs, RejectsInconsistentParams) {
  std::vector<int32_t> pos(1, 0), slot(1, 0), first(1, 0), topk(16, -1), out(256), pages(4, 0);
  auto base = [&] {
    AttnIndexParams p;
    p.rows = {pos.data(), slot.data(), first.data(), first.data()};
    p.pages = {pages.data(), 4};
    p.indices = out.data();
    p.n_q = 1;
    p.window = 128;
    p.pass_base = 128;
    p.comp_base = 256;
    p.per_block = 2;
    p.ratio = kHcaRatio;
    p.n_idx = 256;
    return p;
  };
  AttnIndexParams p = base();
  p.ratio = 5;  // not a V4 compress ratio
  EXPECT_THROW(launch_attention_indices(p, nullptr), InternalError);
  p = base();
  p.pages = {};  // a compressed layer without its page table
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
