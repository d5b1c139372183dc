// Cache-row arithmetic on the device, so that a captured decode step stays right at every
// position and for every sequence of a batch (design.md "Step plan"): where a pass's K=V rows go
// (the pass's own rows, then the sequence's window ring) and where compressed entries and indexer
// keys go (paged). The row format is kv_cache.cuh's; which rows attention reads is
// attention_indices.cuh's; the pool layout is src/cuda/kv_pool.h's.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels/step_rows.cuh"

namespace dsv4::cuda {

// Window rows of a pass (§4.3, §5.5): row r is written to pass_base + r before attention (the
// pass's queries read their own chunk there), and after attention to its slot's ring row
// ring_base + slot·ring_rows + pos % ring_rows when it is among the last ring_rows positions of
// its chunk, which the next pass of that sequence reads. The ring holds the window plus the
// speculative rollback margin (the pool sizes it), so that rolling a sequence back is a
// truncation: the window of every position it can go back to is still there. Padding rows get −1
// in both.
struct WindowSlotParams {
  StepRows rows;
  int32_t* pass_slot = nullptr;  // [n] out
  int32_t* ring_slot = nullptr;  // [n] out
  int n = 0, pass_base = 0, ring_base = 0;
  int ring_rows = 0;  // ring rows per slot: window + rollback margin (>= 1)
};
void launch_window_slots(const WindowSlotParams& p, cudaStream_t stream);

// Compressed entries (§5.4) emitted in this pass: out[r] = base + the pool row of entry
// entry_idx[r] of row r's sequence (step_rows.cuh paged_entry_row), −1 where entry_idx[r] < 0.
struct EntrySlotParams {
  StepRows rows;
  PageTable pages;
  const int32_t* entry_idx = nullptr;  // [n] entry number row r emits, −1: none
  int32_t* out = nullptr;              // [n]
  int n = 0, base = 0, per_block = 0;
};
void launch_entry_slots(const EntrySlotParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
