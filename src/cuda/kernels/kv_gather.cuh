// A prefill chunk's attendable KV rows expanded from the FP8 cache (kv_cache.cuh) to BF16 once
// per layer, so the prefill attention kernel (sparse_attention_prefill.cuh) reads each key as
// plain BF16 however many of the chunk's queries pick it, instead of every query converting
// every key it reads (vLLM does the same before FlashMLA's sparse prefill kernel). The values
// are those the cache-reading kernel converts (kv_rows.cuh), so nothing is rounded differently.
//
// The chunk's key rows, for a chunk whose first row sits at position pos0:
//   rows [0, n_window): window positions wbase, wbase + 1, …, wbase = chunk_window_base(pos0, W)
//     (those before pos0 from the sequence's ring, the rest from the pass's own rows);
//   rows [entry_row0, entry_row0 + n_entries): the layer's compressed entries 0, 1, … of the
//     sequence (CSA or HCA).
// attention_indices.cuh writes lists in these rows when given entry_row0.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernels/step_rows.cuh"

namespace dsv4::cuda {

// The first window position any query of a chunk starting at pos0 can see (§4.3: t − W + 1).
__host__ __device__ constexpr int chunk_window_base(int pos0, int window) {
  return pos0 - window + 1 > 0 ? pos0 - window + 1 : 0;
}

struct KvGatherParams {
  const uint8_t* cache = nullptr;  // the layer's pool pages (kv_cache.cuh)
  int block_size = 0;              // cache rows per page
  int dim = 0;                     // head_dim: kKvDimV4 or kKvDimNano
  StepRows rows;                   // the pass's rows: the chunk's slot and pos0 come from row `first`
  int first = 0;                   // the chunk's first pass row
  int n_window = 0;                // window rows to gather: pos0 + chunk length − wbase
  int window = 0, pass_base = 0, ring_base = 0, ring_rows = 0;  // as attention_indices.cuh
  PageTable pages;                 // compressed layers: slot -> blocks
  int comp_base = 0, per_block = 0;
  int n_entries = 0;               // compressed entries to gather (0 on a sliding layer)
  int entry_row0 = 0;              // key row of entry 0 (>= n_window)
  __nv_bfloat16* out = nullptr;    // [entry_row0 + n_entries, dim] BF16 key rows
};

void launch_kv_gather(const KvGatherParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
