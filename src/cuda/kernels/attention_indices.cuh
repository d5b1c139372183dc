// The per-query cache-row list that sparse_attention.cuh consumes (§7): the sliding window's
// rows (this pass's own, then the sequence's ring), then the layer's compressed entries (HCA: all visible; CSA: the indexer's picks),
// built on the device from device positions so it runs inside the decode CUDA graph. Producing
// the picks (indexer top-k) and the cache rows themselves is other kernels' work.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernels/step_rows.cuh"

namespace dsv4::cuda {

// For each query row q with position t (step_rows.cuh; its chunk starts at position pos0 in row
// `first`): first the window, positions max(0, t−window+1) … t in increasing order — at pool row
// pass_base + first + (p − pos0) when p ≥ pos0 (this pass's own rows), else at its slot's ring row
// ring_base + slot·ring_rows + p % ring_rows (the ring keeps the window plus the speculative
// rollback margin, cache_slots.cuh; only `window` positions are visible); then compressed
// entries: HCA (ratio 128) every visible j < (t+1)/ratio (§7 visibility), CSA (ratio 4) the
// indexer picks topk[q][i] that are >= 0, in their order, each at comp_base +
// paged_entry_row(pages, slot, j, per_block); sliding (ratio 0) none. The rest of the row is
// −1; a padding row (t < 0) is all −1. So a row's valid entries come first, and `count` (when
// set) receives how many there are.
// If more entries are visible than n_idx holds, the first n_idx are written (never out of bounds);
// the caller sizes n_idx = window + the largest compressed count so this does not happen.
// Query q of a launch is pass row row0 + q (a pass's rows go through in groups).
// With entry_row0 >= 0 the lists hold the query's chunk key rows instead (kv_gather.cuh: window
// position p at p − chunk_window_base(pos0, window), entry j at entry_row0 + j): the same keys in
// the same order, for the prefill kernel that reads the chunk's rows as BF16.
struct AttnIndexParams {
  StepRows rows;                  // positions, slots, chunk starts of the whole pass
  int row0 = 0;
  PageTable pages;                // compressed layers: slot -> blocks
  const int32_t* topk = nullptr;  // [n_q, topk_k] CSA picks of this launch's queries (entry numbers, −1 = none), else nullptr
  int32_t* indices = nullptr;     // [n_q, n_idx] out: pool rows, −1 = masked
  int32_t* count = nullptr;       // [n_q] out, or nullptr: the row's entries before its first −1 (all its valid ones)
  int n_q = 0, window = 0, pass_base = 0, ring_base = 0, comp_base = 0, per_block = 0;
  int ratio = 0, topk_k = 0, n_idx = 0;
  int ring_rows = 0;  // ring rows per slot (as cache_slots.cuh wrote them): >= window
  int entry_row0 = -1;  // >= 0: chunk key rows, compressed entry 0 at this row (kv_gather.cuh)
};

void launch_attention_indices(const AttnIndexParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
