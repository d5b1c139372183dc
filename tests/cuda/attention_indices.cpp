// Parity of kernels/attention_indices.cu against a host index list written from §4.3/§7 (and the
// CPU backend's key-set loop, src/cpu/attention.cpp) over random multi-sequence steps: the window
// positions one by one (this pass's rows, then the slot's ring — window-sized, or window + the
// rollback margin), then the visible HCA entries or the valid CSA picks in order through the page
// table, −1 after. Exact integer equality, poisoned output, and a guard region behind the output
// that must stay untouched; the same lists in chunk key rows (kv_gather.cuh) for the prefill
// kernel. Then, with cache_slots.cu writing the rings, speculative rollbacks:
// every window row a query names holds its position's latest feed.
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <unordered_set>

#include "cuda/kernels/attention_indices.cuh"
#include "cuda/kernels/cache_slots.cuh"
#include "model/config.h"
#include "model/rollback.h"
#include "op_parity.h"
#include "step_layout.h"
#include "util/error.h"

namespace dsv4::cuda::test {
namespace {

constexpr int kIndexPoisonByte = 0x5A;           // 0x5A5A5A5A: far above every slot below, and not −1
constexpr int32_t kIndexPoison = 0x5A5A5A5A;
constexpr int kGuard = 64;                       // int32s behind the output that must stay poisoned
// Ring rows the pool adds beyond the window: the positions a speculative step can roll back
// (model/rollback.h window_ring_rows: the pool and the CPU backend keep the same margin).
constexpr int kMargin = int(kRollbackPositions);

struct IndexCase {
  const char* what;
  int ratio, window, topk_k, n_seqs, max_chunk, max_pos;
  int n_idx;         // 0: window + the largest compressed count; > 0: this (smaller: truncation)
  int margin;        // ring rows per slot beyond the window: 0 (the exact ring) or kMargin
};

// The pool layout of one layer (kv_pool.h): rings of 16 slots, then the pass's rows, then entries.
struct PoolBases {
  int ring_base, pass_base, comp_base, per_block;
};

// Host reference (§7, attention_indices.cuh): window positions max(0, t−W+1) … t — this pass's
// row when at or after the chunk's start, else the slot's ring row (W + margin rows per slot) —
// then the compressed entries through the page table, then −1; more than n_idx entries: the
// first n_idx; padding: all −1. With entry_row0 >= 0, the chunk's key rows instead: window
// position p at p − max(0, pos0 − W + 1), entry j at entry_row0 + j.
std::vector<int32_t> reference_row(const IndexCase& c, const StepLayout& L, const PoolBases& b, int r,
                                   const int32_t* picks, int n_idx, int entry_row0) {
  std::vector<int32_t> row;
  const int t = L.pos[size_t(r)];
  if (t >= 0) {
    const int slot = L.slot[size_t(r)], first = L.first[size_t(r)], pos0 = L.pos[size_t(first)];
    const int ring_rows = c.window + c.margin, wbase = std::max(0, pos0 - c.window + 1);
    const auto entry = [&](int j) {
      return entry_row0 >= 0 ? entry_row0 + j : b.comp_base + L.entry_row(slot, j, b.per_block);
    };
    for (int p = std::max(0, t - c.window + 1); p <= t; ++p)
      row.push_back(entry_row0 >= 0 ? p - wbase
                    : p >= pos0     ? b.pass_base + first + (p - pos0)
                                    : b.ring_base + slot * ring_rows + p % ring_rows);
    if (c.ratio == kHcaRatio)
      for (int j = 0; j < (t + 1) / kHcaRatio; ++j) row.push_back(entry(j));
    if (c.ratio == kCsaRatio)
      for (int i = 0; i < c.topk_k; ++i)
        if (picks[i] >= 0) row.push_back(entry(picks[i]));
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
  b.pass_base = b.ring_base + kSlots * (c.window + c.margin);
  b.comp_base = b.pass_base + n_rows + uniform_int(0, 100);
  b.per_block = c.ratio > 0 ? 256 / c.ratio : 0;

  // Pool rows, then chunk key rows (kv_gather.cuh) with entry 0 at a random row.
  DeviceBuffer<int32_t> d_topk(topk);  // empty unless CSA
  for (const int entry_row0 : {-1, uniform_int(0, 5000)}) {
    // Launched in groups of rows (row0), as the attention step does; each group writes its own rows.
    DeviceBuffer<int32_t> d_out(size_t(n_rows) * n_idx + kGuard);
    d_out.fill_bytes(kIndexPoisonByte);
    DeviceBuffer<int32_t> d_count(size_t(n_rows) + kGuard);
    d_count.fill_bytes(kIndexPoisonByte);
    const int group = uniform_int(1, n_rows);
    for (int g0 = 0; g0 < n_rows; g0 += group) {
      AttnIndexParams p;
      p.rows = D.rows();
      p.row0 = g0;
      p.pages = D.table();
      p.topk = c.ratio == kCsaRatio ? d_topk.get() + int64_t(g0) * c.topk_k : nullptr;
      p.indices = d_out.get() + int64_t(g0) * n_idx;
      p.count = d_count.get() + g0;
      p.n_q = std::min(group, n_rows - g0);
      p.window = c.window;
      p.ring_rows = c.window + c.margin;
      p.pass_base = b.pass_base;
      p.ring_base = b.ring_base;
      p.comp_base = b.comp_base;
      p.per_block = b.per_block;
      p.ratio = c.ratio;
      p.topk_k = c.ratio == kCsaRatio ? c.topk_k : 0;
      p.n_idx = n_idx;
      p.entry_row0 = entry_row0;
      launch_attention_indices(p, nullptr);
    }
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    const auto got = d_out.download();
    const auto got_count = d_count.download();

    int64_t n_bad = 0, n_truncated = 0;
    for (int qi = 0; qi < n_rows; ++qi) {
      const auto ref =
          reference_row(c, L, b, qi, topk.empty() ? nullptr : topk.data() + int64_t(qi) * c.topk_k, n_idx, entry_row0);
      n_truncated += ref.back() >= 0;
      // The valid entries are the row's prefix, and count says how long it is.
      const int32_t valid = int32_t(std::find(ref.begin(), ref.end(), -1) - ref.begin());
      const int64_t valid_anywhere = std::count_if(ref.begin(), ref.end(), [](int32_t v) { return v >= 0; });
      EXPECT_EQ(valid_anywhere, valid) << c.what << ": row " << qi << ": the reference row is not a valid prefix";
      if (got_count[size_t(qi)] != valid && n_bad++ < 5)
        ADD_FAILURE() << c.what << ": row " << qi << " (pos " << L.pos[size_t(qi)] << "): count "
                      << got_count[size_t(qi)]
                      << ", want " << valid;
      for (int i = 0; i < n_idx; ++i) {
        const int32_t g = got[size_t(qi) * n_idx + i], e = ref[size_t(i)];
        if (g != e && n_bad++ < 5)
          ADD_FAILURE() << c.what << ": row " << qi << " (pos " << L.pos[size_t(qi)] << ") entry " << i << ": got " << g
                        << ", want " << e;
      }
    }
    for (int i = 0; i < kGuard; ++i) n_bad += got[size_t(n_rows) * n_idx + i] != kIndexPoison;
    for (int i = 0; i < kGuard; ++i) n_bad += got_count[size_t(n_rows) + i] != kIndexPoison;
    std::printf("attention_indices %s (%s): rows=%d group=%d n_idx=%d max_pos=%d rows_full=%lld mismatches=%lld\n",
                c.what, entry_row0 >= 0 ? "chunk key rows" : "pool rows", n_rows, group, n_idx, max_t,
                static_cast<long long>(n_truncated), static_cast<long long>(n_bad));
    EXPECT_EQ(n_bad, 0) << c.what << (entry_row0 >= 0 ? " (chunk key rows)" : "");
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AttentionIndicesTest,
    ::testing::Values(IndexCase{"sliding", 0, 128, 0, 12, 200, 5000, 0, kMargin},
                      IndexCase{"sliding_exact_ring", 0, 128, 0, 12, 200, 5000, 0, 0},
                      IndexCase{"sliding_decode", 0, 128, 0, 40, 1, 5000, 0, kMargin},
                      IndexCase{"sliding_truncated", 0, 128, 0, 6, 100, 1000, 100, kMargin},  // window cut
                      IndexCase{"hca", kHcaRatio, 128, 0, 12, 64, 3000, 0, kMargin},
                      IndexCase{"hca_exact_ring", kHcaRatio, 128, 0, 12, 64, 3000, 0, 0},
                      IndexCase{"hca_prefill", kHcaRatio, 128, 0, 3, 300, 700, 0, kMargin},
                      IndexCase{"hca_truncated", kHcaRatio, 128, 0, 8, 16, 2000, 130, kMargin},
                      IndexCase{"csa_nano", kCsaRatio, 128, 16, 10, 40, 700, 0, kMargin},
                      IndexCase{"csa_nano_prefill", kCsaRatio, 128, 16, 2, 200, 400, 0, kMargin},
                      IndexCase{"csa_flash_decode", kCsaRatio, 128, 512, 64, 1, 1 << 16, 0, kMargin},
                      IndexCase{"csa_flash_decode_exact_ring", kCsaRatio, 128, 512, 64, 1, 1 << 16, 0, 0},
                      IndexCase{"csa_flash", kCsaRatio, 128, 512, 6, 8, 1 << 16, 0, kMargin},
                      IndexCase{"csa_pro", kCsaRatio, 128, 1024, 4, 4, 1 << 20, 0, kMargin},
                      IndexCase{"csa_truncated", kCsaRatio, 128, 512, 6, 8, 1 << 14, 228, kMargin}),
    [](const ::testing::TestParamInfo<IndexCase>& info) { return std::string(info.param.what); });

// ---- Speculative rollback through the window rings ----

class WindowRingRollbackTest : public CudaOpTest {
 protected:
  // What a pool row holds in this test's model: a position of a slot's sequence and which feed of
  // that position wrote it (−1: never written).
  struct Held {
    int32_t pos = -1;
    int64_t feed = -1;
  };

  // Streams kSeqs fresh sequences (distinct slots of kSlots, W + 2·kMargin + 1 … 3W positions,
  // ring_rows rows per slot) through passes that follow `schedule_seed`, the same for any
  // ring_rows: each pass takes each unfinished sequence with probability 3/4, in random order, with
  // a chunk of 1 (decode), 2 … kMargin + 1 (verify) or up to 2W + 5 (prefill) positions, then 0–2
  // padding rows; after a third of the chunks the sequence rolls back by 1 … (its position − its
  // floor), the floor being kMargin behind its furthest feed (cpu/sequence_state.h). Chunks stop
  // at position W until the forced rollback there. Per pass, as the attention step orders it:
  // window_slots, the sliding index lists of every row (attention_indices), then the ring rows
  // written. Returns how many window entries name a row that does not hold the latest feed of
  // that position of that sequence (a pass row of this feed, or a ring row the model says holds
  // it); n_rollbacks gets how many rollbacks the schedule made.
  int64_t stale_window_reads(int window, int ring_rows, uint64_t schedule_seed, int* n_rollbacks) {
    constexpr int kSlots = 16, kSeqs = 6;
    std::mt19937_64 sched(schedule_seed);
    auto draw = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(sched); };
    struct Seq {
      int slot = 0, len = 0, next = 0, furthest = 0, lowest = 0;
      bool forced = false;
      std::vector<int64_t> latest;  // [len] the feed that last wrote each position
    };
    std::vector<int> slots(kSlots);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), sched);
    std::vector<Seq> seqs(kSeqs);
    for (int i = 0; i < kSeqs; ++i) {
      seqs[size_t(i)].slot = slots[size_t(i)];
      seqs[size_t(i)].len = draw(window + 2 * kMargin + 1, 3 * window);
      seqs[size_t(i)].latest.assign(size_t(seqs[size_t(i)].len), -1);
    }
    const int ring_base = 0, pass_base = kSlots * ring_rows;
    std::vector<Held> ring(size_t(kSlots) * ring_rows);
    int64_t n_feeds = 0, stale = 0;
    *n_rollbacks = 0;
    auto unfinished = [](const Seq& q) { return q.next < q.len; };
    while (std::any_of(seqs.begin(), seqs.end(), unfinished)) {
      std::vector<size_t> order;
      for (size_t i = 0; i < seqs.size(); ++i)
        if (unfinished(seqs[i]) && draw(0, 3) > 0) order.push_back(i);
      if (order.empty())
        for (size_t i = 0; i < seqs.size() && order.empty(); ++i)
          if (unfinished(seqs[i])) order.push_back(i);
      std::shuffle(order.begin(), order.end(), sched);
      StepLayout L;  // no page table: a sliding layer has no compressed entries
      std::vector<int64_t> row_feed;
      std::vector<int> row_seq, back(seqs.size(), 0);
      for (size_t i : order) {
        Seq& q = seqs[i];
        int n = 0;
        if (!q.forced && q.next >= window) {
          // The forced rollback: kMargin drafts at positions W … W + kMargin − 1 overwrite, in a
          // window-sized ring, the rows of positions 0 … kMargin − 1, three of which (1 … 3) the
          // query at W reads after the rollback. With the margin nothing it reads moves.
          n = kMargin;
          back[i] = kMargin;
          q.forced = true;
        } else {
          const int kind = draw(0, 9);
          n = kind < 4 ? 1 : kind < 7 ? draw(2, kMargin + 1) : draw(2, 2 * window + 5);
          n = std::min(n, q.len - q.next);
          if (!q.forced) n = std::min(n, window - q.next);  // stop at W: the forced rollback starts there
        }
        L.add_chunk(q.slot, q.next, n);
        for (int k = 0; k < n; ++k) {
          q.latest[size_t(q.next + k)] = n_feeds;
          row_feed.push_back(n_feeds++);
          row_seq.push_back(int(i));
        }
        q.furthest = std::max(q.furthest, q.next + n);
        q.lowest = std::max(q.lowest, q.furthest - kMargin);
        q.next += n;
        if (back[i] == 0 && draw(0, 2) == 0) back[i] = draw(1, q.next - q.lowest);
      }
      const int n_pad = draw(0, 2);
      L.add_padding(n_pad);
      row_feed.insert(row_feed.end(), size_t(n_pad), -1);
      row_seq.insert(row_seq.end(), size_t(n_pad), -1);

      const DeviceStepLayout D(L);
      const int T = L.rows();
      DeviceBuffer<int32_t> d_pass(static_cast<size_t>(T)), d_ring(static_cast<size_t>(T)), d_idx(size_t(T) * window);
      d_idx.fill_bytes(kIndexPoisonByte);
      WindowSlotParams ws;
      ws.rows = D.rows();
      ws.pass_slot = d_pass.get();
      ws.ring_slot = d_ring.get();
      ws.n = T;
      ws.pass_base = pass_base;
      ws.ring_base = ring_base;
      ws.ring_rows = ring_rows;
      launch_window_slots(ws, nullptr);
      AttnIndexParams ip;
      ip.rows = D.rows();
      ip.indices = d_idx.get();
      ip.n_q = T;
      ip.window = window;
      ip.ring_rows = ring_rows;
      ip.pass_base = pass_base;
      ip.ring_base = ring_base;
      ip.n_idx = window;
      launch_attention_indices(ip, nullptr);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      const auto pass_rows = d_pass.download(), ring_rows_out = d_ring.download(), idx = d_idx.download();

      for (int r = 0; r < T; ++r) {
        const int t = L.pos[size_t(r)];
        if (t < 0) continue;
        const Seq& q = seqs[size_t(row_seq[size_t(r)])];
        const int first = std::max(0, t - window + 1);
        for (int i = 0; i < window; ++i) {
          const int32_t v = idx[size_t(r) * window + i];
          const int p = first + i;
          bool ok;
          if (p > t) {
            ok = v == -1;  // past the window: masked
          } else if (v >= pass_base && v < pass_base + T) {  // a row of this pass
            const int src = v - pass_base;
            ok = pass_rows[size_t(src)] == v && L.pos[size_t(src)] == p && L.slot[size_t(src)] == q.slot &&
                 row_feed[size_t(src)] == q.latest[size_t(p)];
          } else if (v >= ring_base + q.slot * ring_rows && v < ring_base + (q.slot + 1) * ring_rows) {
            const Held& h = ring[size_t(v - ring_base)];  // the slot's own ring
            ok = h.pos == p && h.feed == q.latest[size_t(p)];
          } else {
            ok = false;
          }
          if (!ok && stale++ < 3 && ring_rows > window)
            ADD_FAILURE() << "slot " << q.slot << " query at " << t << ": window position " << p << " -> row " << v;
        }
      }
      // After attention the pass's rows go to the rings (attention_step.cpp's order).
      for (int r = 0; r < T; ++r) {
        const int32_t v = ring_rows_out[size_t(r)];
        if (v < 0) continue;
        if (v < ring_base || v >= pass_base) {
          ADD_FAILURE() << "ring row " << v << " outside the rings";
          ++stale;
          continue;
        }
        ring[size_t(v - ring_base)] = {L.pos[size_t(r)], row_feed[size_t(r)]};
      }
      for (size_t i = 0; i < seqs.size(); ++i) {
        seqs[i].next -= back[i];
        *n_rollbacks += back[i] > 0;
      }
    }
    return stale;
  }
};

// Sequences with rollbacks on window + margin rings: every window entry names its position's
// latest feed. The same schedule on window-sized rings must read an overwritten row (each
// sequence's forced rollback), so the test sees what the margin is for.
TEST_F(WindowRingRollbackTest, WindowEntriesNameTheLatestFeed) {
  constexpr int kWindow = 128;  // sliding_window
  const uint64_t schedule_seed = rng();
  int n_rollbacks = 0, n_rollbacks_again = 0;
  const int64_t stale = stale_window_reads(kWindow, kWindow + kMargin, schedule_seed, &n_rollbacks);
  const int64_t stale_exact = stale_window_reads(kWindow, kWindow, schedule_seed, &n_rollbacks_again);
  ASSERT_EQ(n_rollbacks, n_rollbacks_again) << "the schedule must not depend on the ring size";
  std::printf("window ring rollback: %d rollbacks; stale reads %lld with ring %d, %lld with ring %d\n", n_rollbacks,
              static_cast<long long>(stale), kWindow + kMargin, static_cast<long long>(stale_exact), kWindow);
  EXPECT_EQ(stale, 0) << "window + margin ring: a rolled-back sequence read a row its rejected drafts overwrote";
  EXPECT_GT(stale_exact, 0) << "the window-sized ring survived every forced rollback, so this test cannot see the margin";
}

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
    p.ring_rows = 128 + kMargin;
    p.pass_base = 128 + kMargin;
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
  p = base();
  p.ring_rows = p.window - 1;  // a ring that cannot hold the window
  EXPECT_THROW(launch_attention_indices(p, nullptr), InternalError);
}

}  // namespace
}  // namespace dsv4::cuda::test
