// Parity of kernels/kv_gather.cu: a long chunk's window rows and compressed entries, expanded from
// an FP8 cache of random bytes (E4M3 subnormals and ±448 included, scales over ±20 binades) to BF16,
// against a scalar host decoding of the same bytes (util/float_formats.h), bit for bit; rows the
// gather should not write stay poisoned. Then the contract the prefill attention leans on: the
// row lists attention_indices writes in chunk key rows name, entry for entry, the same values as
// its lists in pool rows.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "cuda/kernels/attention_indices.cuh"
#include "cuda/kernels/kv_cache.cuh"
#include "cuda/kernels/kv_gather.cuh"
#include "model/config.h"
#include "op_parity.h"
#include "step_layout.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

constexpr int kWindow = 128, kRingRows = kWindow + 8, kBlockSize = 64, kSlots = 4;
constexpr uint16_t kPoison = 0x7FC1;  // a BF16 NaN no row holds

struct GatherCase {
  const char* what;
  int ratio, dim, chunk, pos0;
};

class KvGatherTest : public CudaOpTest, public ::testing::WithParamInterface<GatherCase> {};

TEST_P(KvGatherTest, MatchesHostDecodingAndTheSlotLists) {
  const GatherCase c = GetParam();
  const int dim = c.dim, nope = kv_nope(dim), data_bytes = kv_row_data_bytes(dim), scale_bytes = kv_row_scale_bytes(dim);
  const int64_t page_bytes = kv_page_bytes(kBlockSize, dim);

  // Two decode rows of other sequences, then the chunk (its own rows start at pass row 2).
  StepLayout L;
  L.random_pages(rng, kSlots, (c.pos0 + c.chunk) / 256 + 2);
  L.add_chunk(2, uniform_int(0, 3000), 1);
  L.add_chunk(3, uniform_int(0, 3000), 1);
  const int first = L.rows(), slot = 1;
  L.add_chunk(slot, c.pos0, c.chunk);
  const DeviceStepLayout D(L);

  // Pool rows (kv_pool.h): the rings, the pass's rows, then the entries' blocks.
  const int ring_base = uniform_int(0, 70), pass_base = ring_base + kSlots * kRingRows;
  const int comp_base = pass_base + L.rows() + uniform_int(0, 50);
  const int per_block = c.ratio > 0 ? 256 / c.ratio : 0;
  const int pool_rows = comp_base + L.n_blocks * std::max(per_block, 1);
  const int n_pages = (pool_rows + kBlockSize - 1) / kBlockSize;

  // Every row: random E4M3 NoPE bytes, BF16 RoPE values, UE8M0 scales over 2^±20.
  std::vector<uint8_t> cache(size_t(page_bytes) * n_pages, 0);
  const auto row_data = [&](int s) { return cache.data() + (s / kBlockSize) * page_bytes + (s % kBlockSize) * data_bytes; };
  const auto row_scales = [&](int s) {
    return cache.data() + (s / kBlockSize) * page_bytes + int64_t(kBlockSize) * data_bytes + (s % kBlockSize) * scale_bytes;
  };
  for (int s = 0; s < n_pages * kBlockSize; ++s) {
    const auto e4m3 = random_e4m3(size_t(nope));
    std::memcpy(row_data(s), e4m3.data(), e4m3.size());
    const auto rope = to_bf16(normals(kKvRope, 3.0f));
    std::memcpy(row_data(s) + nope, rope.data(), rope.size() * 2);
    const auto sc = random_e8m0(size_t(kv_tiles(dim)), 20);
    std::memcpy(row_scales(s), sc.data(), sc.size());
  }
  // Scalar decoding of slot s: E4M3 · 2^(scale − 127) (exact in BF16), the RoPE bits as stored.
  const auto decoded = [&](int s) {
    std::vector<uint16_t> v(static_cast<size_t>(dim));
    for (int d = 0; d < nope; ++d)
      v[size_t(d)] = f32_to_bf16(e4m3_to_f32(row_data(s)[d]) * e8m0_to_f32(row_scales(s)[d / kKvTile]));
    std::memcpy(v.data() + nope, row_data(s) + nope, kKvRope * 2);
    return v;
  };
  const auto pool_entry = [&](int j) { return comp_base + L.entry_row(slot, j, per_block); };

  const int wbase = std::max(0, c.pos0 - kWindow + 1);
  const int n_window = c.pos0 + c.chunk - wbase;
  const int n_entries = c.ratio > 0 ? (c.pos0 + c.chunk) / c.ratio : 0;
  const int entry_row0 = n_window + uniform_int(0, 9);  // a gap the gather must leave alone
  const int n_out = entry_row0 + n_entries + 3;
  DeviceBuffer<uint8_t> d_cache(cache);
  DeviceBuffer<uint16_t> d_out(size_t(n_out) * dim);
  d_out.upload(std::vector<uint16_t>(size_t(n_out) * dim, kPoison));
  KvGatherParams p;
  p.cache = d_cache.get();
  p.block_size = kBlockSize;
  p.dim = dim;
  p.rows = D.rows();
  p.first = first;
  p.n_window = n_window;
  p.window = kWindow;
  p.pass_base = pass_base;
  p.ring_base = ring_base;
  p.ring_rows = kRingRows;
  p.pages = D.table();
  p.comp_base = comp_base;
  p.per_block = per_block;
  p.n_entries = n_entries;
  p.entry_row0 = entry_row0;
  p.out = bf16_ptr(d_out);
  launch_kv_gather(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = d_out.download();
  const auto row = [&](int r) { return std::vector<uint16_t>(got.begin() + int64_t(r) * dim, got.begin() + int64_t(r + 1) * dim); };

  int64_t bad = 0;
  for (int r = 0; r < n_window; ++r) {
    const int pos = wbase + r;
    const int src = pos >= c.pos0 ? pass_base + first + (pos - c.pos0) : ring_base + slot * kRingRows + pos % kRingRows;
    if (row(r) != decoded(src) && bad++ < 5) ADD_FAILURE() << c.what << ": window row " << r << " (position " << pos << ")";
  }
  for (int j = 0; j < n_entries; ++j)
    if (row(entry_row0 + j) != decoded(pool_entry(j)) && bad++ < 5) ADD_FAILURE() << c.what << ": entry " << j;
  const std::vector<uint16_t> poison(size_t(dim), kPoison);
  for (int r = n_window; r < entry_row0; ++r) bad += row(r) != poison;
  for (int r = entry_row0 + n_entries; r < n_out; ++r) bad += row(r) != poison;

  // The chunk's lists in pool rows and in chunk key rows: the same count, and entry for entry the
  // gathered row equals the pool row's decoding. CSA picks: distinct visible entries, some −1.
  const int topk_k = 16, n_q = c.chunk;
  std::vector<int32_t> topk;
  if (c.ratio == kCsaRatio) {
    topk.assign(size_t(L.rows()) * topk_k, -1);
    for (int r = first; r < L.rows(); ++r) {
      std::vector<int32_t> vis(size_t((L.pos[size_t(r)] + 1) / kCsaRatio));
      std::iota(vis.begin(), vis.end(), 0);
      std::shuffle(vis.begin(), vis.end(), rng);
      for (int i = 0; i < topk_k && i < int(vis.size()); ++i)
        topk[size_t(r) * topk_k + i] = uniform_int(0, 7) == 0 ? -1 : vis[size_t(i)];
    }
  }
  const int n_idx = kWindow + (c.ratio == kCsaRatio ? topk_k : n_entries);
  DeviceBuffer<int32_t> d_topk(topk);
  std::vector<std::vector<int32_t>> lists, counts;
  for (const int mode_row0 : {-1, entry_row0}) {
    DeviceBuffer<int32_t> d_idx(size_t(n_q) * n_idx), d_count(static_cast<size_t>(n_q));
    AttnIndexParams ip;
    ip.rows = D.rows();
    ip.row0 = first;
    ip.pages = D.table();
    ip.topk = c.ratio == kCsaRatio ? d_topk.get() + int64_t(first) * topk_k : nullptr;
    ip.indices = d_idx.get();
    ip.count = d_count.get();
    ip.n_q = n_q;
    ip.window = kWindow;
    ip.ring_rows = kRingRows;
    ip.pass_base = pass_base;
    ip.ring_base = ring_base;
    ip.comp_base = comp_base;
    ip.per_block = per_block;
    ip.ratio = c.ratio;
    ip.topk_k = c.ratio == kCsaRatio ? topk_k : 0;
    ip.n_idx = n_idx;
    ip.entry_row0 = mode_row0;
    launch_attention_indices(ip, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    lists.push_back(d_idx.download());
    counts.push_back(d_count.download());
  }
  EXPECT_EQ(counts[0], counts[1]) << c.what << ": list lengths differ between pool rows and chunk key rows";
  int64_t compared = 0;
  for (int q = 0; q < n_q; ++q)
    for (int i = 0; i < counts[0][size_t(q)]; ++i) {
      const int32_t pool_row = lists[0][size_t(q) * n_idx + i], key_row = lists[1][size_t(q) * n_idx + i];
      const bool in_range = key_row >= 0 && key_row < n_out;
      if ((!in_range || row(key_row) != decoded(pool_row)) && bad++ < 5)
        ADD_FAILURE() << c.what << ": query " << q << " entry " << i << ": key row " << key_row << ", pool row " << pool_row;
      ++compared;
    }
  std::printf("kv_gather %s: window rows %d, entries %d, list entries compared %lld, mismatches %lld\n", c.what,
              n_window, n_entries, static_cast<long long>(compared), static_cast<long long>(bad));
  EXPECT_GT(compared, int64_t(n_q)) << c.what;
  EXPECT_EQ(bad, 0) << c.what;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, KvGatherTest,
    ::testing::Values(GatherCase{"sliding", 0, kKvDimV4, 300, 1000},
                      GatherCase{"sliding_nano_from_0", 0, kKvDimNano, 90, 0},
                      GatherCase{"hca", kHcaRatio, kKvDimV4, 200, 5000},
                      GatherCase{"hca_early", kHcaRatio, kKvDimV4, 100, 40},  // fewer positions than the window
                      GatherCase{"csa", kCsaRatio, kKvDimV4, 150, 2100},
                      GatherCase{"csa_nano", kCsaRatio, kKvDimNano, 130, 700}),
    [](const ::testing::TestParamInfo<GatherCase>& info) { return std::string(info.param.what); });

}  // namespace
}  // namespace dsv4::cuda::test
