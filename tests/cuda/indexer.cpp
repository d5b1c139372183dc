// Parity of kernels/indexer.cu against a double-precision §6 score over the dequantised FP4 keys
// (util/float_formats.h) and the CPU backend's selection rule (src/cpu/indexer.cpp: largest
// first, ties to the lower index, kept entries in increasing order, −1 padding). Keys live in a
// paged pool (step_rows.cuh) under a random page table whose every block holds different keys, so
// a query that reads another sequence's page, or the wrong block, scores different keys; every
// launch holds queries of several sequences, and padding rows select nothing.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iterator>
#include <numeric>

#include "cuda/kernels/hadamard_fp4.cuh"  // kIndexerDim
#include "cuda/kernels/indexer.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "step_layout.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

struct TopkCase {
  const char* name;
  int Hi, K, max_entries;
  std::vector<int32_t> pos;  // query positions (ratio 4), spread over 3 sequences; −1: padding
  int n_distinct = 0;        // > 0: every key is a copy of one of this many rows (exact ties)
  int prefill_from = -1;     // >= 0: 256 consecutive query positions of one sequence instead of pos
  int batch_seqs = 0;        // > 0: instead, random_step_layout's chunks of this many sequences + padding
  bool mma = false;          // IndexerTopkParams::prefill: the tensor-core scores (one sequence per launch)
};

constexpr int kRatio = 4;          // §5.2: the indexer's compressor is the CSA one
constexpr int kPrefillQueries = 256;
constexpr int kTopkPoison = 0x7F;  // 0x7F7F7F7F: neither −1 nor a valid entry
constexpr int kPoolSlots = 4;      // slots with pages in the pool; 3 of them carry the queries
constexpr int kBatchSlots = 16;    // slots of the batch_seqs cases

// The CPU backend's rule on scores v[0..n): the min(K, n) largest, ties to the lower index,
// returned in increasing index order. Works for float and double scores alike.
template <typename T>
std::vector<int32_t> select_rule(const std::vector<T>& v, int K) {
  std::vector<int32_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  const size_t n_sel = std::min(size_t(K), v.size());
  std::partial_sort(order.begin(), order.begin() + int64_t(n_sel), order.end(), [&](int32_t i, int32_t j) {
    return v[size_t(i)] > v[size_t(j)] || (v[size_t(i)] == v[size_t(j)] && i < j);
  });
  order.resize(n_sel);
  std::sort(order.begin(), order.end());
  return order;
}

class IndexerTopkTest : public CudaOpTest, public ::testing::WithParamInterface<TopkCase> {
 protected:
  // One key row [128] -> E2M1 pairs + UE8M0 per 32 (§12, scale floor 6·2^-126), as hadamard_fp4
  // writes them; deq gets the exact dequantised values.
  void quantise_key(const float* x, uint8_t* packed, uint8_t* scale, float* deq) {
    const float floor_amax = kE2M1Max * std::ldexp(1.0f, -126);
    std::fill(packed, packed + kIndexerDim / 2, 0);
    for (int b = 0; b < kIndexerDim / kMXFP4BlockSize; ++b) {
      float amax = 0;
      for (int i = 0; i < kMXFP4BlockSize; ++i) amax = std::max(amax, std::fabs(x[b * kMXFP4BlockSize + i]));
      scale[b] = ue8m0_scale_for(amax, kE2M1Max, floor_amax);
      const float s = e8m0_to_f32(scale[b]);
      for (int i = 0; i < kMXFP4BlockSize; ++i) {
        const int k = b * kMXFP4BlockSize + i;
        const uint8_t code = f32_to_e2m1(x[k] / s);
        packed[k / 2] |= uint8_t(code << (4 * (k % 2)));
        deq[k] = e2m1_to_f32(code) * s;  // a grid value times a power of two: exact
      }
    }
  }
};

TEST_P(IndexerTopkTest, MatchesReference) {
  const TopkCase c = GetParam();
  constexpr int d = kIndexerDim;
  const int K = c.K, Hi = c.Hi, n_keys = c.max_entries;

  // Queries and their sequences (slots), and the page table of every slot.
  StepLayout L;
  if (c.batch_seqs > 0) {
    // The runtime's shape: decode rows and prefill chunks of several sequences, padding after.
    L = random_step_layout(rng, c.batch_seqs, 40, kRatio * n_keys - 1, kBatchSlots, uniform_int(1, 3));
  } else {
    // ceil(max_entries / 64) blocks per slot: every visible key has a page (kIndexerKeysPerBlock).
    L.random_pages(rng, kPoolSlots, std::max(1, (n_keys + kIndexerKeysPerBlock - 1) / kIndexerKeysPerBlock));
    std::vector<int> seq_slots(kPoolSlots);
    std::iota(seq_slots.begin(), seq_slots.end(), 0);
    std::shuffle(seq_slots.begin(), seq_slots.end(), rng);
    if (c.prefill_from >= 0) {
      L.add_chunk(seq_slots[0], c.prefill_from, kPrefillQueries);
    } else {
      for (int32_t t : c.pos) {
        if (t < 0) L.add_padding(1);
        else L.add_chunk(seq_slots[size_t(uniform_int(0, 2))], t, 1);
      }
    }
  }
  const std::vector<int32_t>& pos = L.pos;
  const int n_q = L.rows();
  const int pool_keys = L.n_blocks * kIndexerKeysPerBlock;

  // Keys: every pool row (blocks of every slot and unowned ones) its own random row, of different
  // magnitudes (several UE8M0 scales), FP4-quantised on the host. With n_distinct, each pool row
  // copies one of a few rows: large groups of bit-equal keys, so the selection boundary falls
  // inside a group of exactly tied scores.
  const int n_rows = c.n_distinct > 0 ? c.n_distinct : pool_keys;
  std::vector<uint8_t> row_packed(size_t(n_rows) * d / 2), row_scale(size_t(n_rows) * d / kMXFP4BlockSize);
  std::vector<float> row_deq(size_t(n_rows) * d);  // e2m1 · 2^k: exact in FP32
  for (int r = 0; r < n_rows; ++r) {
    const auto x = normals(d, std::ldexp(1.0f, uniform_int(-3, 3)));
    quantise_key(x.data(), &row_packed[size_t(r) * d / 2], &row_scale[size_t(r) * d / kMXFP4BlockSize],
                 &row_deq[size_t(r) * d]);
  }
  std::vector<int> pool_row_src(static_cast<size_t>(pool_keys));  // the row each pool row copies
  for (int k = 0; k < pool_keys; ++k) pool_row_src[size_t(k)] = c.n_distinct > 0 ? uniform_int(0, c.n_distinct - 1) : k;
  std::vector<uint8_t> key_packed(size_t(pool_keys) * d / 2), key_scale(size_t(pool_keys) * d / kMXFP4BlockSize);
  for (int k = 0; k < pool_keys; ++k) {
    const int r = pool_row_src[size_t(k)];
    std::memcpy(&key_packed[size_t(k) * d / 2], &row_packed[size_t(r) * d / 2], d / 2);
    std::memcpy(&key_scale[size_t(k) * d / kMXFP4BlockSize], &row_scale[size_t(r) * d / kMXFP4BlockSize],
                d / kMXFP4BlockSize);
  }
  // Key j of query qi's sequence: the pool row its page table names (step_rows.cuh), as a source row.
  auto key_row = [&](int qi, int j) {
    return pool_row_src[size_t(L.entry_row(L.slot[size_t(qi)], j, kIndexerKeysPerBlock))];
  };
  // Queries as hadamard_fp4's fq (FP4 fake-quant, exact in BF16); head weights of both signs.
  std::vector<float> q = normals(size_t(n_q) * Hi * d);
  fp4_roundtrip_blocks(q.data(), int64_t(q.size()), kIndexerQuantBlock);
  const auto q_bf = to_bf16(q);
  const auto qf = from_bf16(q_bf);
  const std::vector<float> hw = normals(size_t(n_q) * Hi);

  DeviceBuffer<uint16_t> d_q(q_bf);
  DeviceBuffer<float> d_hw(hw), d_score(size_t(n_q) * n_keys);
  DeviceBuffer<uint8_t> d_packed(key_packed), d_scale(key_scale);
  const DeviceStepLayout D(L);
  DeviceBuffer<int32_t> d_topk(size_t(n_q) * K);
  d_score.fill_bytes(kPoisonByte);
  d_topk.fill_bytes(kTopkPoison);
  IndexerTopkParams p;
  p.q = bf16_ptr(d_q);
  p.head_weight = d_hw.get();
  p.key_packed = d_packed.get();
  p.key_scale = d_scale.get();
  p.pos = D.pos.get();
  p.slot = D.slot.get();
  p.pages = D.table();
  p.score = d_score.get();
  p.topk = d_topk.get();
  p.n_q = n_q;
  p.Hi = Hi;
  p.K = K;
  p.ratio = kRatio;
  p.max_entries = n_keys;
  p.prefill = c.mma;
  launch_indexer_topk(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto score = d_score.download();
  const auto topk = d_topk.download();

  // Reference scores in double (exact up to 2^-53 relative) and a per-score FP32 error budget.
  // With c = di^−½·Hi^−½, a_h = Σ_i |q_hi·k_i| and r_h = ReLU(q_h·k): any FP32 summation order of
  // the 128 products errs by ≤ γ_127·a_h < 128u·a_h (ReLU is 1-Lipschitz; the tensor-core scores'
  // 8 k16 HMMAs at ≤ 8u·a_h each stay inside it); w_h·fl(c) rounds twice (≤ 2u·|w_h c|); the
  // Hi-term FMA chain errs by ≤ γ_Hi·Σ_h |w_h c|·r_h (the tensor-core scores: a product, an FMA
  // and 6 tree adds over the 64 head slots, padding heads adding exact zeros: 8 ≤ Hi + 4 for
  // Hi ≥ 4). Rounding the constants up for the second-order terms:
  // budget = u·Σ_h |w_h c|·(130·a_h + (Hi+4)·r_h).
  const double w_scale = 1.0 / std::sqrt(double(d)) / std::sqrt(double(Hi));
  std::vector<float> got_all;
  std::vector<double> ref_all, budget_all;
  int64_t n_swaps = 0, n_near_ties = 0, n_tied_groups_split = 0, n_undecidable = 0, n_padding = 0;
  for (int qi = 0; qi < n_q; ++qi) {
    const int n_vis = int(std::clamp<int64_t>((int64_t(pos[size_t(qi)]) + 1) / kRatio, 0, n_keys));
    const int n_sel = std::min(K, n_vis);
    std::vector<double> ref(static_cast<size_t>(n_vis)), budget(static_cast<size_t>(n_vis));
    for (int j = 0; j < n_vis; ++j) {
      const float* k = &row_deq[size_t(key_row(qi, j)) * d];
      double s = 0, b = 0;
      for (int h = 0; h < Hi; ++h) {
        const float* qh = &qf[(size_t(qi) * Hi + h) * d];
        double dot = 0, a = 0;
        for (int i = 0; i < d; ++i) {
          dot += double(qh[i]) * k[i];
          a += std::fabs(double(qh[i]) * k[i]);
        }
        const double wc = double(hw[size_t(qi) * Hi + h]) * w_scale, r = std::max(dot, 0.0);
        s += r * wc;
        b += std::fabs(wc) * (130 * a + (Hi + 4) * r);
      }
      ref[size_t(j)] = s;
      budget[size_t(j)] = b * kF32Unit;
    }
    std::vector<float> got(score.begin() + int64_t(qi) * n_keys, score.begin() + int64_t(qi) * n_keys + n_vis);
    got_all.insert(got_all.end(), got.begin(), got.end());
    ref_all.insert(ref_all.end(), ref.begin(), ref.end());
    budget_all.insert(budget_all.end(), budget.begin(), budget.end());
    for (int j = 0; j < n_vis; ++j)
      ASSERT_TRUE(std::isfinite(got[size_t(j)])) << c.name << " q" << qi << ": score " << j << " unwritten";
    for (int j = n_vis; j < n_keys; ++j)
      ASSERT_EQ(f32_to_bits(score[size_t(qi) * n_keys + j]), 0xFFFFFFFFu)
          << c.name << " q" << qi << ": scratch beyond the visible keys was written at " << j;

    // 1. Layout: n_sel entries, then −1.
    const std::vector<int32_t> row(topk.begin() + int64_t(qi) * K, topk.begin() + int64_t(qi + 1) * K);
    const std::vector<int32_t> sel(row.begin(), row.begin() + n_sel);
    for (int i = n_sel; i < K; ++i) ASSERT_EQ(row[size_t(i)], -1) << c.name << " q" << qi << " slot " << i;
    n_padding += pos[size_t(qi)] < 0;
    // 2. Exactly the CPU rule applied to the kernel's own FP32 scores (order, ties by index).
    ASSERT_EQ(sel, select_rule(got, K)) << c.name << " q" << qi << " pos " << pos[size_t(qi)]
                                        << ": selection differs from the rule on the kernel's scores";
    // 3. Against the double reference: an entry may be kept over a better one only when their
    //    scores lie within both budgets (then FP32 cannot order them); nothing else may differ.
    std::vector<char> kept(size_t(n_vis), 0);
    for (int32_t j : sel) kept[size_t(j)] = 1;
    double worst_dropped = -INFINITY, worst_kept = INFINITY;
    for (int j = 0; j < n_vis; ++j) {
      if (kept[size_t(j)]) worst_kept = std::min(worst_kept, ref[size_t(j)] + budget[size_t(j)]);
      else worst_dropped = std::max(worst_dropped, ref[size_t(j)] - budget[size_t(j)]);
    }
    EXPECT_LE(worst_dropped, worst_kept) << c.name << " q" << qi << ": a dropped entry beats a kept one beyond the budget";
    const auto ref_sel = select_rule(ref, K);
    std::vector<int32_t> only_ref;
    std::set_difference(ref_sel.begin(), ref_sel.end(), sel.begin(), sel.end(), std::back_inserter(only_ref));
    n_swaps += int64_t(only_ref.size());
    // 4. Exact equality with the reference's selection wherever the double scores decide it:
    //    no score other than the boundary value lies within the two budgets of the boundary (the
    //    boundary group itself is bit-equal keys, tied exactly in both and cut by index).
    //    Scores within twice their budget of the boundary (informational, ~0 on random data) are
    //    where FP32 and the double reference may legitimately order differently.
    if (n_sel > 0 && n_sel < n_vis) {
      std::vector<double> sorted(ref);
      std::nth_element(sorted.begin(), sorted.begin() + (n_sel - 1), sorted.end(), std::greater<double>());
      const double boundary = sorted[size_t(n_sel - 1)];
      double boundary_budget = 0;
      for (int j = 0; j < n_vis; ++j)
        if (ref[size_t(j)] == boundary) boundary_budget = std::max(boundary_budget, budget[size_t(j)]);
      bool decidable = true;
      for (int j = 0; j < n_vis; ++j) {
        const double gap = std::fabs(ref[size_t(j)] - boundary);
        n_near_ties += ref[size_t(j)] != boundary && gap <= 2 * budget[size_t(j)];
        decidable = decidable && (ref[size_t(j)] == boundary || gap > budget[size_t(j)] + boundary_budget);
      }
      if (decidable)
        EXPECT_EQ(sel, ref_sel) << c.name << " q" << qi << " pos " << pos[size_t(qi)] << " slot " << L.slot[size_t(qi)]
                                << ": selection differs from the reference's";
      else
        ++n_undecidable;
      // Exact ties straddling the boundary (duplicate keys): the kernel must have cut the group.
      int n_eq = 0, n_eq_kept = 0;
      for (int j = 0; j < n_vis; ++j) {
        if (ref[size_t(j)] != boundary) continue;
        ++n_eq;
        n_eq_kept += kept[size_t(j)];
      }
      n_tied_groups_split += n_eq_kept > 0 && n_eq_kept < n_eq;
    } else {
      EXPECT_EQ(sel, ref_sel) << c.name << " q" << qi << ": all or none visible, the selection is fixed";
    }
    // Bit-equal keys must give bit-equal FP32 scores, or the tie rule above would be vacuous.
    if (c.n_distinct > 0) {
      std::vector<float> first(size_t(c.n_distinct), NAN);
      for (int j = 0; j < n_vis; ++j) {
        float& f = first[size_t(key_row(qi, j))];
        if (std::isnan(f)) f = got[size_t(j)];
        ASSERT_EQ(f32_to_bits(f), f32_to_bits(got[size_t(j)])) << c.name << " q" << qi << " entry " << j;
      }
    }
  }
  expect_parity(cat("indexer score ", c.name), got_all, ref_all, budget_all);
  std::printf("[topk] %-16s n_q=%d (padding %lld) Hi=%d K=%d pool_keys=%d swaps_vs_double=%lld near_ties=%lld "
              "undecidable=%lld tie_groups_cut=%lld\n",
              c.name, n_q, static_cast<long long>(n_padding), Hi, K, pool_keys, static_cast<long long>(n_swaps),
              static_cast<long long>(n_near_ties), static_cast<long long>(n_undecidable),
              static_cast<long long>(n_tied_groups_split));
  if (c.batch_seqs > 0 || std::count(c.pos.begin(), c.pos.end(), -1) > 0) {
    EXPECT_GT(n_padding, 0) << "the case must hold padding rows";
  }
  if (c.n_distinct > 0) {
    EXPECT_GT(n_tied_groups_split, 0) << "the tie case must cut a group of equal scores";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, IndexerTopkTest,
    ::testing::Values(
        // Visible 0, 0, 1, 1, 2, 5, 15, 16 (= K), 16, 17 (K + 1), 64: around multiples of 4.
        TopkCase{"few_visible", 8, 16, 64, {-1, 2, 3, 6, 7, 22, 62, 63, 64, 67, 255}},
        // Positions past 4·max_entries clamp to the cache.
        TopkCase{"clamped", 4, 16, 40, {159, 160, 1000}},
        TopkCase{"hi4_long", 4, 16, 3000, {11995, 11996, 11999, 12000, 5000, 4003}},
        // Flash shapes: decode at 32K, and several queries around visible = K.
        TopkCase{"flash_decode", 64, 512, 8192, {32767}},
        TopkCase{"flash_multi", 64, 512, 4096, {2046, 2047, 2051, 9000, 16383}},
        TopkCase{"pro_decode", 64, 1024, 20000, {79999}},
        // A prefill chunk: 256 consecutive positions, each query with its own visible prefix.
        TopkCase{"prefill_chunk", 8, 16, 814, {}, 0, 3000},
        // 256 queries with ~5,000 visible keys (40 tiles of 128) each: more tiles than two waves of
        // any device give a query, so each block scores several tiles in turn.
        TopkCase{"prefill_strided", 4, 16, 6000, {}, 0, 20000},
        // Exact ties from duplicate keys (nano-sized K and Flash-sized K).
        TopkCase{"ties_small", 8, 32, 500, {1999, 1003, 70}, 5},
        TopkCase{"ties_flash", 64, 512, 3000, {11999, 6000}, 7},
        // The runtime's batches: chunks of 7 / 12 sequences in random slots of 16, padding after.
        TopkCase{"batch_nano", 4, 32, 1024, {}, 0, -1, 7},
        TopkCase{"batch_flash", 64, 512, 1024, {}, 0, -1, 12},
        // The tensor-core scores of a prefill chunk's queries (one sequence per launch): small and
        // Flash-sized heads, keys striding over several tiles, and exact ties (duplicate keys must
        // score bit-equal, so the tie rule still decides).
        TopkCase{"prefill_chunk_mma", 8, 16, 814, {}, 0, 3000, 0, true},
        TopkCase{"prefill_strided_mma", 4, 16, 6000, {}, 0, 20000, 0, true},
        TopkCase{"prefill_flash_mma", 64, 512, 1024, {}, 0, 2600, 0, true},
        TopkCase{"prefill_ties_mma", 8, 32, 900, {}, 5, 3000, 0, true}),
    [](const ::testing::TestParamInfo<TopkCase>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace dsv4::cuda::test
