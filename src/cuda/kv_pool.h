// The KV cache on the GPU (design.md "Paged KV pools", §13): per layer one pool of FP8 K=V rows
// (kv_cache.cuh's row format) laid out as [window rings of every slot | the pass's own rows |
// paged compressed entries], the CSA layers' FP4 indexer keys (paged the same way), and per slot
// the compressor rings (§5.5). Which block ids a sequence holds is host bookkeeping
// (model/kv_blocks.h) mirrored into the device page table here; filling the rows is the step's.
#pragma once

#include <cstdint>
#include <vector>

#include "cuda/device_arena.h"
#include "cuda/device_model.h"
#include "cuda/kernels/step_rows.cuh"
#include "model/rollback.h"

namespace dsv4::cuda {

// What a pool holds: sequence slots, KV blocks (of kKvBlockTokens positions), the longest
// sequence and the largest pass.
struct KvPoolShape {
  int n_slots = 0;
  int n_blocks = 0;
  int64_t max_context = 0;
  int pass_rows = 0;
  int pages_per_slot() const;  // ceil(max_context / kKvBlockTokens)
};

struct LayerPool {
  uint8_t* cache = nullptr;  // [rows / kKvBlockSize pages] kv_cache.cuh pages
  int64_t rows = 0;
  // Row bases: slot s's ring is [ring_base + s·ring_rows, +ring_rows); the pass's row r is
  // pass_base + r; entry j of a sequence is comp_base + paged_entry_row(…, per_block).
  int ring_base = 0, pass_base = 0, comp_base = 0;
  int ring_rows = 0;    // window_ring_rows (model/rollback.h): the window and the rollback margin
  int per_block = 0;    // compressed entries per block: 256/ratio (0: sliding layer)
  int max_entries = 0;  // compressed entries one sequence can reach (max_context / ratio)
  int n_idx = 0;        // attention row-list width: W + (CSA: index_topk, HCA: max_entries)
  bool csa = false;     // CSA layer: indexer keys and their scores (sizes hold in a counting pool too)
  // Compressor rings [n_slots, compressor_ring_rows(m), coff·c] (§5.5, model/rollback.h).
  float *comp_ring_a = nullptr, *comp_ring_z = nullptr;
  float *idx_ring_a = nullptr, *idx_ring_z = nullptr;    // the indexer compressor's (CSA)
  uint8_t *idx_keys = nullptr, *idx_key_scale = nullptr; // [n_blocks·64, 64] e2m1, [.., 4] ue8m0
};

// Final streams a slot keeps for the MTP block (§10): the position before the sequence's next one
// must survive any rollback, so one more than the rollback reach (model/rollback.h).
inline constexpr int kKeptStreamRows = int(kRollbackPositions) + 1;

// Carved from `arena` (device_arena.h: a counting arena sizes it with the same code).
struct KvPool {
  KvPool(const DeviceModel& m, const KvPoolShape& shape, DeviceArena& arena);
  KvPoolShape shape;
  // One per main layer, then the MTP block's (when the model has one; index = its layer id L).
  std::vector<LayerPool> layers;
  // MTP input (§10 step 2): slot s's final pre-HC_head streams of position p at row
  // s·kKeptStreamRows + p mod kKeptStreamRows, [n_slots, kKeptStreamRows, n, D]; null without MTP.
  __nv_bfloat16* kept_streams = nullptr;
  int32_t* page_table = nullptr;  // [n_slots, pages_per_slot] block ids
  PageTable pages() const { return {page_table, shape.pages_per_slot()}; }
  int max_n_idx() const;
  int max_csa_entries() const;
  int max_entries() const;  // most compressed entries (CSA or HCA) one sequence can reach in any layer
};


}  // namespace dsv4::cuda
