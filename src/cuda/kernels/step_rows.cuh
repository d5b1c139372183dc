// How kernels see a step over many sequences (design.md "Step plan"): per row its position and
// sequence slot and where its sequence's chunk starts and ends in the pass, and the page table
// that maps a sequence's compressed-entry numbers to rows of a layer's pool. The host side that
// fills these is src/cuda/step_plan.h; the pool layout is src/cuda/kv_pool.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// The rows of one pass. A sequence's rows are consecutive (its chunk, positions increasing by
// one); padding rows (a decode graph captured for more rows than the step has) have pos −1 and
// slot −1 and are never written anywhere.
struct StepRows {
  const int32_t* pos = nullptr;    // [n] absolute position, −1: padding
  const int32_t* slot = nullptr;   // [n] sequence slot (window ring, compressor state, page table row)
  const int32_t* first = nullptr;  // [n] row index of the first row of this row's chunk
  const int32_t* last = nullptr;   // [n] row index of the last row of this row's chunk
};

// Block ids of each slot's KV blocks, in token order (block b covers positions [256b, 256b+256)).
struct PageTable {
  const int32_t* pages = nullptr;  // [n_slots, per_slot]
  int per_slot = 0;                // blocks a slot can hold (max_context / block_tokens, rounded up)
};

// Pool row of compressed entry j of the sequence in `slot`, for a pool that keeps `per_block`
// entries per block (a layer's entries per 256 positions: 64 for CSA, 2 for HCA).
__device__ __forceinline__ int32_t paged_entry_row(const PageTable& t, int slot, int j, int per_block) {
  return t.pages[int64_t(slot) * t.per_slot + j / per_block] * per_block + j % per_block;
}

}  // namespace dsv4::cuda
