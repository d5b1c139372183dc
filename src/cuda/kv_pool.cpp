// KvPool (kv_pool.h): the per-layer row spaces and their carving.
#include "cuda/kv_pool.h"

#include <algorithm>
#include <climits>

#include "cuda/kernels/hadamard_fp4.cuh"
#include "cuda/kernels/indexer.cuh"
#include "cuda/kernels/kv_cache.cuh"
#include "cuda/step.h"  // kKvBlockSize
#include "model/kv_blocks.h"
#include "util/error.h"

namespace dsv4::cuda {

int KvPoolShape::pages_per_slot() const {
  return int((max_context + kKvBlockTokens - 1) / kKvBlockTokens);
}

namespace {

// Floats of one slot's compressor ring (a and z each, §5.5): compressor_ring_rows rows of coff·c.
size_t ring_floats(const DeviceCompressor& c) {
  return size_t(compressor_ring_rows(c.ratio)) * c.coff * c.width;
}

}  // namespace

KvPool::KvPool(const DeviceModel& m, const KvPoolShape& s, DeviceArena& arena) : shape(s) {
  const ModelConfig& cfg = m.cfg;
  const int W = int(cfg.sliding_window), d = int(cfg.head_dim);
  const int64_t page_bytes = kv_page_bytes(kKvBlockSize, d);
  const size_t slots = size_t(s.n_slots), blocks = size_t(s.n_blocks);
  auto add = [&](const DeviceLayer& l) {
    LayerPool p;
    const int ratio = l.spec.compress_ratio;
    p.per_block = ratio > 0 ? int(kKvBlockTokens / ratio) : 0;
    p.max_entries = ratio > 0 ? int(s.max_context / ratio) : 0;
    p.n_idx = W + (l.spec.attention == AttentionType::kCSA   ? int(cfg.index_topk)
                   : l.spec.attention == AttentionType::kHCA ? p.max_entries
                                                             : 0);
    p.csa = l.spec.attention == AttentionType::kCSA;
    p.ring_base = 0;
    p.ring_rows = int(window_ring_rows(W));
    p.pass_base = s.n_slots * p.ring_rows;
    const int64_t comp_base = int64_t(p.pass_base) + s.pass_rows;
    const int64_t rows = comp_base + int64_t(s.n_blocks) * p.per_block;
    if (rows > INT_MAX) fail("the KV pool of layer ", layers.size(), " would have ", rows, " rows (int32 limit)");
    p.comp_base = int(comp_base);
    p.rows = rows;
    p.cache = arena.take<uint8_t>(size_t((rows + kKvBlockSize - 1) / kKvBlockSize * page_bytes));
    if (l.compressor) {
      p.comp_ring_a = arena.take<float>(slots * ring_floats(*l.compressor));
      p.comp_ring_z = arena.take<float>(slots * ring_floats(*l.compressor));
    }
    if (l.idx_compressor) {
      p.idx_ring_a = arena.take<float>(slots * ring_floats(*l.idx_compressor));
      p.idx_ring_z = arena.take<float>(slots * ring_floats(*l.idx_compressor));
      const size_t keys = blocks * kIndexerKeysPerBlock;
      p.idx_keys = arena.take<uint8_t>(keys * (kIndexerDim / 2));
      p.idx_key_scale = arena.take<uint8_t>(keys * (kIndexerDim / 32));
    }
    layers.push_back(p);
  };
  for (const DeviceLayer& l : m.layers) add(l);
  if (m.mtp) {
    add(m.mtp->layer);
    kept_streams = arena.take<__nv_bfloat16>(slots * kKeptStreamRows * size_t(cfg.hc_mult * cfg.hidden_size));
  }
  page_table = arena.take<int32_t>(slots * size_t(s.pages_per_slot()));
}

int KvPool::max_n_idx() const {
  int n = 1;
  for (const LayerPool& l : layers) n = std::max(n, l.n_idx);
  return n;
}

int KvPool::max_entries() const {
  int n = 0;
  for (const LayerPool& l : layers) n = std::max(n, l.max_entries);
  return n;
}

int KvPool::max_csa_entries() const {
  int n = 1;
  for (const LayerPool& l : layers)
    if (l.csa) n = std::max(n, l.max_entries);
  return n;
}

}  // namespace dsv4::cuda
