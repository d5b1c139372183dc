// KvPool (src/cuda/kv_pool.h): its row spaces and bytes, derived here from the header's layout,
// kv_cache.cuh's page format and device_arena.h's carving, on nano's, Flash's and Pro's configs
// through a counting arena (host-only: runs without a GPU); and one small real pool on the GPU
// where page-table rows, cache rows and indexer keys must land where kv_pool.h says.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "cuda/device_arena.h"
#include "cuda/device_model.h"
#include "cuda/kernels/cache_slots.cuh"
#include "cuda/kernels/hadamard_fp4.cuh"
#include "cuda/kernels/indexer.cuh"
#include "cuda/kernels/kv_cache.cuh"
#include "cuda/kv_pool.h"
#include "cuda/step.h"  // kKvBlockSize
#include "model/config.h"
#include "model/known_configs.h"
#include "model/kv_blocks.h"
#include "op_parity.h"
#include "step_layout.h"
#include "util/error.h"

namespace dsv4::cuda::test {
namespace {

namespace fs = std::filesystem;

struct NamedConfig {
  const char* name;
  ModelConfig cfg;
};

std::vector<NamedConfig> configs() {
  return {{"nano", ModelConfig::load(fs::path(DSV4_SOURCE_DIR) / "models/nano")},
          {"flash", ModelConfig::from_json(flash_config_json())},
          {"pro", ModelConfig::from_json(pro_config_json())}};
}

// The device model without device memory, as cuda_forward.cpp's layer_shells builds it for sizing,
// here from the config instead of the bound weights: weights.cpp gives every ratio-4/128 layer a
// main compressor of width head_dim and every CSA layer an indexer compressor of width
// index_head_dim, both at the layer's ratio, overlapping (coff 2) at ratio 4 (§5).
DeviceModel shell(const ModelConfig& cfg) {
  DeviceModel m;
  m.cfg = cfg;
  for (const LayerSpec& spec : cfg.layers) {
    DeviceLayer l;
    l.spec = spec;
    auto compressor = [&](int64_t width) {
      DeviceCompressor c;
      c.ratio = spec.compress_ratio;
      c.width = int(width);
      c.coff = int(compressor_overlap(spec.compress_ratio));
      return c;
    };
    if (spec.compress_ratio > 0) l.compressor = compressor(cfg.head_dim);
    if (spec.attention == AttentionType::kCSA) l.idx_compressor = compressor(cfg.index_head_dim);
    m.layers.push_back(std::move(l));
  }
  return m;
}

// device_arena.h: every carve is rounded up to 256 bytes, and an empty one still takes 256.
size_t carved(size_t bytes) {
  constexpr size_t a = DeviceArena::kAlign;
  return bytes == 0 ? a : (bytes + a - 1) / a * a;
}

int64_t per_block_of(const LayerSpec& s) { return s.compress_ratio > 0 ? kKvBlockTokens / s.compress_ratio : 0; }

// Speculative decoding rolls back the verified token and up to 3 drafts (model/forward.h), so every
// per-slot ring keeps 4 rows beyond what the next position reads (model/rollback.h).
constexpr int64_t kMargin = 4;
static_assert(kMargin == kMaxSpeculative + 1);
int64_t ring_rows_of(const ModelConfig& cfg) { return cfg.sliding_window + kMargin; }
// Compressor ring rows: the window being filled, the CSA previous one, and the margin (§5.5).
int64_t comp_ring_rows_of(int64_t m) { return compressor_overlap(m) * m + kMargin; }

// The pool's rows of one layer: [rings of every slot | the pass's rows | paged entries].
int64_t rows_of(const ModelConfig& cfg, const LayerSpec& s, const KvPoolShape& shape) {
  return int64_t(shape.n_slots) * ring_rows_of(cfg) + shape.pass_rows + int64_t(shape.n_blocks) * per_block_of(s);
}

// FP8 K=V rows in kv_cache.cuh pages of kKvBlockSize rows.
size_t cache_bytes(const ModelConfig& cfg, int64_t rows) {
  const int64_t pages = (rows + kKvBlockSize - 1) / kKvBlockSize;
  return carved(size_t(pages * kv_page_bytes(kKvBlockSize, int(cfg.head_dim))));
}

// FP4 indexer keys: 64 bytes of E2M1 pairs and 4 UE8M0 scales per key, kIndexerKeysPerBlock per block.
constexpr int64_t kKeyBytes = kIndexerDim / 2, kKeyScaleBytes = kIndexerDim / 32;

// Everything KvPool carves, written out from kv_pool.h: per layer the cache, the compressor rings
// (a and z: [n_slots, coff·m + margin, coff·c] FP32, §5.5), the indexer's rings and keys; then the page table.
size_t expected_bytes(const ModelConfig& cfg, const KvPoolShape& shape) {
  size_t total = 0;
  const size_t slots = size_t(shape.n_slots), blocks = size_t(shape.n_blocks);
  for (const LayerSpec& s : cfg.layers) {
    total += cache_bytes(cfg, rows_of(cfg, s, shape));
    const int64_t m = s.compress_ratio, coff = compressor_overlap(m);
    if (m > 0) total += 2 * carved(slots * size_t(comp_ring_rows_of(m) * coff * cfg.head_dim) * sizeof(float));
    if (s.attention == AttentionType::kCSA) {
      total += 2 * carved(slots * size_t(comp_ring_rows_of(m) * coff * cfg.index_head_dim) * sizeof(float));
      total += carved(blocks * kIndexerKeysPerBlock * kKeyBytes) + carved(blocks * kIndexerKeysPerBlock * kKeyScaleBytes);
    }
  }
  const size_t pages_per_slot = size_t((shape.max_context + kKvBlockTokens - 1) / kKvBlockTokens);
  return total + carved(slots * pages_per_slot * sizeof(int32_t));
}

size_t pool_bytes(const DeviceModel& m, const KvPoolShape& shape) {
  DeviceArena count;
  KvPool pool(m, shape, count);
  return count.used();
}

KvPoolShape make_shape(int n_slots, int n_blocks, int64_t max_context, int pass_rows) {
  KvPoolShape s;
  s.n_slots = n_slots;
  s.n_blocks = n_blocks;
  s.max_context = max_context;
  s.pass_rows = pass_rows;
  return s;
}

// Per layer: entries per block, entries per sequence, the attention row-list width, the three row
// spaces one after another without overlap, and the pool's byte total — for shapes from one slot
// and one block to the runtime's default 256 slots, odd contexts and passes.
TEST(KvPoolLayout, RowSpacesAndBytesOfEveryLayer) {
  int max_csa_bad = 0;
  std::string max_csa_first_bad;
  for (const auto& [name, cfg] : configs()) {
    const DeviceModel m = shell(cfg);
    const int W = int(cfg.sliding_window), R = int(ring_rows_of(cfg));
    for (const KvPoolShape& shape : {make_shape(1, 1, 1, 1), make_shape(1, 4096, 1 << 20, 2048),
                                     make_shape(256, 1000, 65536, 2048), make_shape(7, 333, 3001, 129),
                                     make_shape(3, 20, 4000, 256)}) {
      const std::string what = std::string(name) + " slots=" + std::to_string(shape.n_slots) + " blocks=" +
                               std::to_string(shape.n_blocks) + " ctx=" + std::to_string(shape.max_context) +
                               " pass=" + std::to_string(shape.pass_rows);
      DeviceArena count;
      const KvPool pool(m, shape, count);
      EXPECT_EQ(count.used(), expected_bytes(cfg, shape)) << what;
      EXPECT_EQ(pool.shape.pages_per_slot(), (shape.max_context + kKvBlockTokens - 1) / kKvBlockTokens) << what;
      ASSERT_EQ(pool.layers.size(), cfg.layers.size()) << what;
      int want_max_n_idx = 1, want_max_csa = 1;
      for (size_t il = 0; il < cfg.layers.size(); ++il) {
        const LayerSpec& s = cfg.layers[il];
        const LayerPool& p = pool.layers[il];
        const std::string at = what + " layer " + std::to_string(il) + " ratio " + std::to_string(s.compress_ratio);
        // §13: a 256-position block holds 64 CSA entries (and 64 indexer keys) or 2 HCA entries.
        EXPECT_EQ(p.per_block, s.compress_ratio == kCsaRatio ? 64 : s.compress_ratio == kHcaRatio ? 2 : 0) << at;
        EXPECT_EQ(p.max_entries, s.compress_ratio > 0 ? shape.max_context / s.compress_ratio : 0) << at;
        // §7: the window, then the CSA picks or every HCA entry a sequence can reach.
        const int64_t want_n_idx = W + (s.attention == AttentionType::kCSA   ? cfg.index_topk
                                        : s.attention == AttentionType::kHCA ? shape.max_context / kHcaRatio
                                                                             : 0);
        EXPECT_EQ(p.n_idx, want_n_idx) << at;
        want_max_n_idx = std::max<int>(want_max_n_idx, int(want_n_idx));
        if (s.attention == AttentionType::kCSA) want_max_csa = std::max<int>(want_max_csa, p.max_entries);
        // Rings [ring_base, +n_slots·R) | pass rows [pass_base, +pass_rows) | entries
        // [comp_base, +n_blocks·per_block) = [0, rows): adjacent, in that order, none overlapping.
        EXPECT_EQ(p.ring_base, 0) << at;
        EXPECT_EQ(p.ring_rows, R) << at;
        EXPECT_EQ(int64_t(p.pass_base), int64_t(p.ring_base) + int64_t(shape.n_slots) * R) << at;
        EXPECT_EQ(int64_t(p.comp_base), int64_t(p.pass_base) + shape.pass_rows) << at;
        EXPECT_EQ(p.rows, int64_t(p.comp_base) + int64_t(shape.n_blocks) * p.per_block) << at;
        EXPECT_EQ(p.rows, rows_of(cfg, s, shape)) << at;
        // The last ring row of the last slot, the last pass row and the last entry row of the
        // last block (step_rows.cuh paged_entry_row) stay in their own space.
        EXPECT_LT(int64_t(p.ring_base) + int64_t(shape.n_slots - 1) * R + (R - 1), int64_t(p.pass_base)) << at;
        EXPECT_LT(int64_t(p.pass_base) + shape.pass_rows - 1, int64_t(p.comp_base)) << at;
        if (p.per_block > 0) {
          const int64_t last_entry = int64_t(p.comp_base) + int64_t(shape.n_blocks - 1) * p.per_block + p.per_block - 1;
          EXPECT_EQ(last_entry, p.rows - 1) << at;
          // Every entry a sequence can reach has a page: j < max_entries ⇒ j / per_block < pages_per_slot.
          if (p.max_entries > 0) {
            EXPECT_LT((p.max_entries - 1) / p.per_block, shape.pages_per_slot()) << at;
          }
        }
      }
      EXPECT_EQ(pool.max_n_idx(), want_max_n_idx) << what;
      max_csa_bad += pool.max_csa_entries() != want_max_csa;
      if (max_csa_first_bad.empty() && pool.max_csa_entries() != want_max_csa)
        max_csa_first_bad = what + ": " + std::to_string(pool.max_csa_entries()) + ", want " + std::to_string(want_max_csa);
    }
  }
  // cuda_forward.cpp's scratch_shape reads max_csa_entries() from a pool carved by a counting
  // arena, and sizes Scratch::index_score [kAttentionGroupRows, max_csa_entries] from it, which the
  // indexer fills at q·max_entries + j: the counting pool must report what a real one would.
  EXPECT_EQ(max_csa_bad, 0) << "max_csa_entries() of a counting-arena pool is not the largest CSA layer's "
                            << "max_entries (the indexer's score scratch would be sized too small), first: "
                            << max_csa_first_bad;
}

// With the MTP block on the device (§10: one sliding-window layer, layer id L) the pool gets one
// more layer pool of a sliding layer's shape — its ring, the pass rows, no entries — and per slot
// kMargin + 1 rows of final streams [n, D] BF16 (the position before the next one survives any
// rollback), carved after the layers and before the page table.
TEST(KvPoolLayout, MtpBlockGetsASlidingPoolAndKeptStreams) {
  for (const auto& [name, cfg] : configs()) {
    DeviceModel m = shell(cfg);
    const KvPoolShape shape = make_shape(7, 333, 3001, 129);
    const size_t without = pool_bytes(m, shape);
    m.mtp.emplace();
    m.mtp->layer.spec = cfg.layers.front();
    m.mtp->layer.spec.compress_ratio = 0;
    m.mtp->layer.spec.attention = AttentionType::kSliding;
    DeviceArena count;
    const KvPool pool(m, shape, count);
    ASSERT_EQ(pool.layers.size(), cfg.layers.size() + 1) << name;
    const LayerPool& p = pool.layers.back();
    EXPECT_EQ(p.ring_rows, ring_rows_of(cfg)) << name;
    EXPECT_EQ(p.per_block, 0) << name;
    EXPECT_EQ(p.n_idx, cfg.sliding_window) << name;
    EXPECT_EQ(p.rows, int64_t(shape.n_slots) * ring_rows_of(cfg) + shape.pass_rows) << name;
    EXPECT_TRUE(p.comp_ring_a == nullptr && p.idx_keys == nullptr) << name;
    const size_t kept = carved(size_t(shape.n_slots) * (kMargin + 1) * size_t(cfg.hc_mult * cfg.hidden_size) * 2);
    EXPECT_EQ(count.used(), without + cache_bytes(cfg, p.rows) + kept) << name;
  }
}

// Sums over the layer types of one config.
struct LayerCounts {
  int csa = 0, hca = 0, sliding = 0;
};
LayerCounts count_layers(const ModelConfig& cfg) {
  LayerCounts n;
  for (const LayerSpec& s : cfg.layers)
    (s.attention == AttentionType::kCSA ? n.csa : s.attention == AttentionType::kHCA ? n.hca : n.sliding)++;
  return n;
}

// One more KV block adds per_block rows to every compressed layer's pool and, on a CSA layer, 64
// indexer keys (64 + 4 bytes each, multiples of 256 bytes per block: no rounding once there is a
// block; with none, each of the two key carves still takes 256 bytes). The cache
// grows in whole 64-row pages: a CSA layer gains exactly one page per block (64 rows), an HCA layer
// one page per 32 blocks (2 rows each), and the arena rounds P·page_bytes up to 256 bytes, which
// repeats every 256 / gcd(page_bytes, 256) pages (4 for both head dims: 37440 and 12480 are 64 mod
// 256). So per block the growth is exactly those page steps, and over 32·4 = 128 blocks exactly
// 128·(page + 64·68 B) per CSA layer + 4 pages per HCA layer, with nothing else moving.
TEST(KvPoolLayout, BytesGrowByTheBlockCost) {
  for (const auto& [name, cfg] : configs()) {
    const DeviceModel m = shell(cfg);
    const int64_t page = kv_page_bytes(kKvBlockSize, int(cfg.head_dim));
    const int64_t align = int64_t(DeviceArena::kAlign);
    const int64_t period_pages = align / std::gcd(page, align);
    ASSERT_EQ(period_pages, 4) << name;
    constexpr int kPeriod = 128;  // blocks: 32 blocks per HCA page × 4 pages
    const LayerCounts n = count_layers(cfg);
    const int64_t key_bytes = int64_t(kIndexerKeysPerBlock) * (kKeyBytes + kKeyScaleBytes);  // 64·68 = 4352
    const int64_t per_period = kPeriod * n.csa * (page + key_bytes) + (kPeriod / 32) * n.hca * page;
    // A CSA layer's key and scale carves for n blocks: key_bytes per block, but 2·256 for none.
    auto key_carves = [](int64_t blocks) {
      const size_t keys = size_t(blocks) * kIndexerKeysPerBlock;
      return int64_t(carved(keys * kKeyBytes) + carved(keys * kKeyScaleBytes));
    };
    KvPoolShape shape = make_shape(3, 0, 1 << 20, 2048);
    int64_t bad_step = 0, bad_period = 0;
    std::vector<int> starts(300);
    std::iota(starts.begin(), starts.end(), 0);
    for (int n_blocks : {4095, 65536, 1 << 20, 3'000'001}) starts.push_back(n_blocks);
    for (int b : starts) {
      shape.n_blocks = b;
      const int64_t at_b = int64_t(pool_bytes(m, shape));
      shape.n_blocks = b + 1;
      const int64_t step = int64_t(pool_bytes(m, shape)) - at_b;
      int64_t want_step = 0;
      for (const LayerSpec& s : cfg.layers) {
        KvPoolShape before = shape;
        before.n_blocks = b;
        want_step += int64_t(cache_bytes(cfg, rows_of(cfg, s, shape))) - int64_t(cache_bytes(cfg, rows_of(cfg, s, before)));
        if (s.attention == AttentionType::kCSA) want_step += key_carves(b + 1) - key_carves(b);
      }
      bad_step += step != want_step;
      if (b == 0) continue;  // the period holds from one block on (the empty key carves above)
      shape.n_blocks = b + kPeriod;
      bad_period += int64_t(pool_bytes(m, shape)) - at_b != per_period;
    }
    EXPECT_EQ(bad_step, 0) << name << ": one block's growth differs from its page steps and keys";
    EXPECT_EQ(bad_period, 0) << name << ": " << kPeriod << " blocks' growth differs from " << per_period << " bytes";
    std::printf("[kv_pool] %-5s %d CSA + %d HCA + %d sliding layers: %lld bytes per %d blocks (%.4f B/token)\n", name,
                n.csa, n.hca, n.sliding, static_cast<long long>(per_period), kPeriod,
                double(per_period) / (kPeriod * kKvBlockTokens));
  }
}

// §13's amortised bytes per token for FP8 kv + MXFP4 indexer keys — per CSA layer a 584-byte row
// per 4 tokens and a 68-byte key per 4 tokens, per HCA layer a 584-byte row per 128 tokens: Flash
// 3,514 B/token (21 CSA + 20 HCA), Pro 5,031 (30 + 31). The pool stores exactly those rows and
// keys; its only extra is the page padding of kv_cache.cuh (64 rows of 584 B = 37,376 B padded to
// a multiple of the 576-byte data row, 37,440 B), so pool = table_kv · 37440/37376 + table_keys.
TEST(KvPoolLayout, PerTokenBytesMatchArchitectureTable) {
  struct Row {
    const char* name;
    double table;  // §13's printed figure
  };
  for (const Row& row : {Row{"flash", 3514}, Row{"pro", 5031}}) {
    ModelConfig cfg;
    for (auto& [name, c] : configs())
      if (std::string(name) == row.name) cfg = c;
    const LayerCounts n = count_layers(cfg);
    const int64_t row_bytes = kv_row_data_bytes(int(cfg.head_dim)) + kv_row_scale_bytes(int(cfg.head_dim));
    ASSERT_EQ(row_bytes, 584);  // §13: 448 E4M3 + 128 BF16 + 8 scale bytes
    const double table_kv = n.csa * row_bytes / 4.0 + n.hca * row_bytes / 128.0;
    const double table_keys = n.csa * (kKeyBytes + kKeyScaleBytes) / 4.0;
    EXPECT_NEAR(table_kv + table_keys, row.table, 0.5) << row.name << ": §13's figure, rounded";
    const DeviceModel m = shell(cfg);
    KvPoolShape shape = make_shape(2, 4096, 1 << 20, 2048);
    const int64_t at = int64_t(pool_bytes(m, shape));
    shape.n_blocks += 128;
    const double pool = double(int64_t(pool_bytes(m, shape)) - at) / (128.0 * kKvBlockTokens);
    const double padding = double(kv_page_bytes(kKvBlockSize, int(cfg.head_dim))) / double(kKvBlockSize * row_bytes);
    std::printf("[kv_pool] %-5s pool %.4f B/token, §13 %.2f (kv %.4f × page padding %.6f + keys %.2f)\n", row.name,
                pool, table_kv + table_keys, table_kv, padding, table_keys);
    // Equal as rationals (n_csa·37440/256 + n_hca·37440/8192 + keys); the pool's side is exact in
    // double (multiples of 2^-15), the table's carries the rounding of 37440/37376: 4 ulps.
    EXPECT_DOUBLE_EQ(pool, table_kv * padding + table_keys) << row.name;
  }
}

// A layer whose rows would pass int32 (the kernels' row type) is refused by name, exactly at the
// limit: Flash's CSA layers have comp_base + 64·n_blocks rows.
TEST(KvPoolLayout, RowsPastInt32AreRefused) {
  const ModelConfig cfg = ModelConfig::from_json(flash_config_json());
  const DeviceModel m = shell(cfg);
  KvPoolShape shape = make_shape(4, 0, 1 << 20, 2048);
  const int64_t comp_base = int64_t(shape.n_slots) * ring_rows_of(cfg) + shape.pass_rows;
  shape.n_blocks = int((INT_MAX - comp_base) / 64);  // rows = comp_base + 64·n_blocks ≤ INT_MAX
  EXPECT_NO_THROW(pool_bytes(m, shape));
  shape.n_blocks += 1;
  try {
    pool_bytes(m, shape);
    ADD_FAILURE() << "a pool of " << comp_base + 64 * int64_t(shape.n_blocks) << " rows per layer was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("int32"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("layer"), std::string::npos) << e.what();
  }
}

// ---- On the GPU: a small real pool ----

class KvPoolDeviceTest : public CudaOpTest {};

// A byte range of the arena, for the disjointness check.
struct Span {
  const void* p;
  size_t bytes;
  std::string what;
};

// nano's pool with 5 slots carved from a real arena: every buffer inside the arena and disjoint;
// page-table rows written per slot (as cuda_forward.cpp mirrors them) read back in kv_pool.h's
// [n_slots, pages_per_slot] layout and steer the kernels' rows; K=V rows packed at the rows
// cache_slots gives (pass rows, slot rings, paged entries) and indexer keys scattered to their
// paged rows land at kv_cache.cuh's page offsets, byte for byte, and nowhere else.
TEST_F(KvPoolDeviceTest, RowsLandWhereThePoolSays) {
  const ModelConfig cfg = ModelConfig::load(fs::path(DSV4_SOURCE_DIR) / "models/nano");
  const DeviceModel m = shell(cfg);
  const int d = int(cfg.head_dim), R = int(ring_rows_of(cfg));
  constexpr int kSlots = 5;
  const int64_t max_context = 3000;
  const int per_slot = int((max_context + kKvBlockTokens - 1) / kKvBlockTokens);
  StepLayout L;
  L.random_pages(rng, kSlots, per_slot);
  const KvPoolShape shape = make_shape(kSlots, L.n_blocks, max_context, 300);
  DeviceArena count;
  { KvPool sizing(m, shape, count); }
  DeviceArena arena(count.used());
  KvPool pool(m, shape, arena);
  ASSERT_EQ(arena.used(), count.used()) << "the counting and the real carving differ";

  // Every buffer, with its size from kv_pool.h, inside one arena's span and disjoint.
  std::vector<Span> spans;
  const int64_t page = kv_page_bytes(kKvBlockSize, d);
  for (size_t il = 0; il < pool.layers.size(); ++il) {
    const LayerPool& p = pool.layers[il];
    const std::string at = "layer " + std::to_string(il);
    spans.push_back({p.cache, size_t((p.rows + kKvBlockSize - 1) / kKvBlockSize * page), at + " cache"});
    const LayerSpec& s = cfg.layers[il];
    const size_t coff = size_t(compressor_overlap(s.compress_ratio)), r = size_t(s.compress_ratio);
    if (s.compress_ratio > 0) {
      const size_t ring = kSlots * size_t(comp_ring_rows_of(int64_t(r))) * coff * size_t(d) * sizeof(float);
      spans.push_back({p.comp_ring_a, ring, at + " comp_ring_a"});
      spans.push_back({p.comp_ring_z, ring, at + " comp_ring_z"});
    } else {
      EXPECT_TRUE(p.comp_ring_a == nullptr && p.comp_ring_z == nullptr) << at;
    }
    if (s.attention == AttentionType::kCSA) {
      const size_t ring = kSlots * size_t(comp_ring_rows_of(int64_t(r))) * coff * size_t(cfg.index_head_dim) * sizeof(float);
      const size_t keys = size_t(shape.n_blocks) * kIndexerKeysPerBlock;
      spans.push_back({p.idx_ring_a, ring, at + " idx_ring_a"});
      spans.push_back({p.idx_ring_z, ring, at + " idx_ring_z"});
      spans.push_back({p.idx_keys, keys * kKeyBytes, at + " idx_keys"});
      spans.push_back({p.idx_key_scale, keys * kKeyScaleBytes, at + " idx_key_scale"});
    } else {
      EXPECT_TRUE(p.idx_keys == nullptr && p.idx_ring_a == nullptr) << at;
    }
  }
  spans.push_back({pool.page_table, size_t(kSlots) * per_slot * sizeof(int32_t), "page_table"});
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.p < b.p; });
  for (const Span& s : spans) ASSERT_NE(s.p, nullptr) << s.what;
  const auto* lo = static_cast<const char*>(spans.front().p);
  for (size_t i = 0; i + 1 < spans.size(); ++i)
    EXPECT_LE(static_cast<const char*>(spans[i].p) + spans[i].bytes, static_cast<const char*>(spans[i + 1].p))
        << spans[i].what << " overlaps " << spans[i + 1].what;
  EXPECT_LE(size_t(static_cast<const char*>(spans.back().p) + spans.back().bytes - lo), arena.used())
      << "buffers span more than the arena";

  // Page table: one row per slot, written slot by slot in random order (cuda_forward.cpp's
  // upload_pages copies a slot's row to page_table + slot·pages_per_slot).
  std::vector<int> order(kSlots);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  for (int s : order)
    DSV4_CUDA_CHECK(cudaMemcpy(pool.page_table + int64_t(s) * per_slot, L.pages.data() + int64_t(s) * per_slot,
                               size_t(per_slot) * sizeof(int32_t), cudaMemcpyHostToDevice));
  std::vector<int32_t> table(L.pages.size());
  DSV4_CUDA_CHECK(cudaMemcpy(table.data(), pool.page_table, table.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
  EXPECT_EQ(table, L.pages) << "page table rows are not [n_slots, pages_per_slot]";
  EXPECT_EQ(pool.pages().pages, pool.page_table);
  EXPECT_EQ(pool.pages().per_slot, per_slot);

  // A pass: chunks of four sequences (one longer than the window), padding after.
  std::vector<int> seq_slots(kSlots);
  std::iota(seq_slots.begin(), seq_slots.end(), 0);
  std::shuffle(seq_slots.begin(), seq_slots.end(), rng);
  for (int i = 0; i < 4; ++i) {
    const int n = i == 0 ? uniform_int(R + 1, 250) : uniform_int(1, 12);
    L.add_chunk(seq_slots[size_t(i)], uniform_int(0, int(max_context) - n), n);
  }
  L.add_padding(3);
  const int T = L.rows();
  ASSERT_LE(T, shape.pass_rows);
  const DeviceStepLayout D(L);
  const StepRows rows = D.rows();
  const PageTable pages = pool.pages();  // the pool's own table, not the test's copy

  // Host packing of one row at row 0 of a one-page cache: the bytes a row must have wherever it lands.
  const int data_bytes = kv_row_data_bytes(d), scale_bytes = kv_row_scale_bytes(d);
  auto pack_alone = [&](const uint16_t* row_bf16) {
    DeviceBuffer<uint16_t> x(std::vector<uint16_t>(row_bf16, row_bf16 + d));
    DeviceBuffer<int32_t> slot0(std::vector<int32_t>{0});
    DeviceBuffer<uint8_t> one(static_cast<size_t>(page));
    one.fill_bytes(0);
    KvPackParams kp;
    kp.kv = bf16_ptr(x);
    kp.slot = slot0.get();
    kp.cache = one.get();
    kp.n_tokens = 1;
    kp.block_size = kKvBlockSize;
    kp.dim = d;
    launch_kv_pack(kp, nullptr);
    const auto bytes = one.download();
    std::vector<uint8_t> out(bytes.begin(), bytes.begin() + data_bytes);
    out.insert(out.end(), bytes.begin() + int64_t(kKvBlockSize) * data_bytes,
               bytes.begin() + int64_t(kKvBlockSize) * data_bytes + scale_bytes);
    return out;
  };

  for (size_t il = 0; il < pool.layers.size(); ++il) {
    const LayerPool& p = pool.layers[il];
    const LayerSpec& s = cfg.layers[il];
    const std::string at = "layer " + std::to_string(il);
    // Window rows (cache_slots.cuh) and, on compressed layers, the entries the rows' windows close.
    DeviceBuffer<int32_t> pass_slot(static_cast<size_t>(T)), ring_slot(static_cast<size_t>(T)), entry_slot(static_cast<size_t>(T));
    WindowSlotParams ws;
    ws.rows = rows;
    ws.pass_slot = pass_slot.get();
    ws.ring_slot = ring_slot.get();
    ws.n = T;
    ws.pass_base = p.pass_base;
    ws.ring_base = p.ring_base;
    ws.ring_rows = p.ring_rows;
    launch_window_slots(ws, nullptr);
    std::vector<int32_t> entry_idx(size_t(T), -1);
    for (int r = 0; r < T; ++r) {
      const int t = L.pos[size_t(r)];
      if (s.compress_ratio > 0 && t >= 0 && (t + 1) % s.compress_ratio == 0) entry_idx[size_t(r)] = (t + 1) / s.compress_ratio - 1;
    }
    DeviceBuffer<int32_t> d_entry_idx(entry_idx);
    if (s.compress_ratio > 0) {
      EntrySlotParams ep;
      ep.rows = rows;
      ep.pages = pages;
      ep.entry_idx = d_entry_idx.get();
      ep.out = entry_slot.get();
      ep.n = T;
      ep.base = p.comp_base;
      ep.per_block = p.per_block;
      launch_entry_slots(ep, nullptr);
    } else {
      entry_slot.fill_bytes(kPoisonByte);  // −1 everywhere: nothing to store
    }
    const auto got_pass = pass_slot.download(), got_ring = ring_slot.download(), got_entry = entry_slot.download();
    // Where kv_pool.h puts them.
    std::vector<std::pair<int32_t, int>> writes;  // (pool row, source row of `kv`)
    int64_t bad_rows = 0;
    for (int r = 0; r < T; ++r) {
      const int t = L.pos[size_t(r)], sl = L.slot[size_t(r)];
      const bool in_ring = t >= 0 && L.pos[size_t(L.last[size_t(r)])] - t < R;
      const int32_t want_pass = t < 0 ? -1 : p.pass_base + r;
      const int32_t want_ring = in_ring ? p.ring_base + sl * R + t % R : -1;
      const int32_t j = entry_idx[size_t(r)];
      const int32_t want_entry = j < 0 ? -1 : p.comp_base + L.entry_row(sl, j, p.per_block);
      bad_rows += got_pass[size_t(r)] != want_pass || got_ring[size_t(r)] != want_ring || got_entry[size_t(r)] != want_entry;
      if (want_pass >= 0) writes.emplace_back(want_pass, r);
      if (want_ring >= 0) writes.emplace_back(want_ring, r);
      if (want_entry >= 0) writes.emplace_back(want_entry, T + r);  // entries: rows T.. of `kv`
    }
    EXPECT_EQ(bad_rows, 0) << at << ": cache_slots rows differ from kv_pool.h's row spaces";
    for (const auto& [row, src] : writes) ASSERT_LT(row, p.rows) << at << ": row outside the pool";

    // Pack window rows and entry rows into the poisoned cache; compare every byte.
    const auto kv = to_bf16(normals(size_t(2 * T) * d));
    DeviceBuffer<uint16_t> d_kv(kv);
    const size_t cache_len = size_t((p.rows + kKvBlockSize - 1) / kKvBlockSize * page);
    DSV4_CUDA_CHECK(cudaMemset(p.cache, kPoisonByte, cache_len));
    for (const DeviceBuffer<int32_t>* dst : {&pass_slot, &ring_slot}) {
      KvPackParams kp;
      kp.kv = bf16_ptr(d_kv);
      kp.slot = dst->get();
      kp.cache = p.cache;
      kp.n_tokens = T;
      kp.block_size = kKvBlockSize;
      kp.dim = d;
      launch_kv_pack(kp, nullptr);
    }
    KvPackParams kp;
    kp.kv = bf16_ptr(d_kv) + size_t(T) * d;
    kp.slot = entry_slot.get();
    kp.cache = p.cache;
    kp.n_tokens = T;
    kp.block_size = kKvBlockSize;
    kp.dim = d;
    launch_kv_pack(kp, nullptr);
    std::vector<uint8_t> cache(cache_len), want(cache_len, uint8_t(kPoisonByte));
    DSV4_CUDA_CHECK(cudaMemcpy(cache.data(), p.cache, cache_len, cudaMemcpyDeviceToHost));
    for (const auto& [row, src] : writes) {  // kv_cache.cuh: page row/64, data rows then scale rows
      const auto bytes = pack_alone(kv.data() + size_t(src) * d);
      uint8_t* pg = want.data() + int64_t(row / kKvBlockSize) * page;
      std::memcpy(pg + int64_t(row % kKvBlockSize) * data_bytes, bytes.data(), size_t(data_bytes));
      std::memcpy(pg + int64_t(kKvBlockSize) * data_bytes + int64_t(row % kKvBlockSize) * scale_bytes,
                  bytes.data() + data_bytes, size_t(scale_bytes));
    }
    int64_t bad_bytes = 0;
    for (size_t i = 0; i < cache_len; ++i) bad_bytes += cache[i] != want[i];
    EXPECT_EQ(bad_bytes, 0) << at << ": " << writes.size() << " rows packed, bytes differ from the page layout";

    // CSA: the pass's new indexer keys scattered to their paged key rows (base 0, 64 per block).
    if (s.attention != AttentionType::kCSA) continue;
    EntrySlotParams kr;
    kr.rows = rows;
    kr.pages = pages;
    kr.entry_idx = d_entry_idx.get();
    kr.out = entry_slot.get();
    kr.n = T;
    kr.base = 0;
    kr.per_block = kIndexerKeysPerBlock;
    launch_entry_slots(kr, nullptr);
    const auto key_rows = entry_slot.download();
    const auto x = to_bf16(normals(size_t(T) * kIndexerDim));
    DeviceBuffer<uint16_t> d_x(x);
    const size_t n_keys = size_t(shape.n_blocks) * kIndexerKeysPerBlock;
    DSV4_CUDA_CHECK(cudaMemset(p.idx_keys, kPoisonByte, n_keys * kKeyBytes));
    DSV4_CUDA_CHECK(cudaMemset(p.idx_key_scale, kPoisonByte, n_keys * kKeyScaleBytes));
    HadamardFp4Params hk;
    hk.x = bf16_ptr(d_x);
    hk.packed = p.idx_keys;
    hk.scale = p.idx_key_scale;
    hk.row_dst = entry_slot.get();
    hk.n_rows = T;
    launch_hadamard_fp4(hk, nullptr);
    DeviceBuffer<uint8_t> alone_packed(size_t(T) * kKeyBytes), alone_scale(size_t(T) * kKeyScaleBytes);
    HadamardFp4Params ha;  // the same rows, in row order: what each key row must hold
    ha.x = bf16_ptr(d_x);
    ha.packed = alone_packed.get();
    ha.scale = alone_scale.get();
    ha.n_rows = T;
    launch_hadamard_fp4(ha, nullptr);
    const auto ap = alone_packed.download(), as = alone_scale.download();
    std::vector<uint8_t> keys(n_keys * kKeyBytes), scales(n_keys * kKeyScaleBytes);
    DSV4_CUDA_CHECK(cudaMemcpy(keys.data(), p.idx_keys, keys.size(), cudaMemcpyDeviceToHost));
    DSV4_CUDA_CHECK(cudaMemcpy(scales.data(), p.idx_key_scale, scales.size(), cudaMemcpyDeviceToHost));
    std::vector<uint8_t> want_keys(keys.size(), uint8_t(kPoisonByte)), want_scales(scales.size(), uint8_t(kPoisonByte));
    int n_new_keys = 0;
    for (int r = 0; r < T; ++r) {
      const int32_t j = entry_idx[size_t(r)];
      const int32_t want_row = j < 0 ? -1 : L.entry_row(L.slot[size_t(r)], j, kIndexerKeysPerBlock);
      EXPECT_EQ(key_rows[size_t(r)], want_row) << at << " row " << r;
      if (want_row < 0) continue;
      ++n_new_keys;
      std::memcpy(&want_keys[size_t(want_row) * kKeyBytes], &ap[size_t(r) * kKeyBytes], kKeyBytes);
      std::memcpy(&want_scales[size_t(want_row) * kKeyScaleBytes], &as[size_t(r) * kKeyScaleBytes], kKeyScaleBytes);
    }
    expect_bytes_equal(at + " indexer keys (" + std::to_string(n_new_keys) + " new)", keys, want_keys);
    expect_bytes_equal(at + " indexer key scales", scales, want_scales);
  }
}

}  // namespace
}  // namespace dsv4::cuda::test
