// The per-query cache-slot list that sparse_attention.cuh consumes (§7): the sliding window's
// ring slots, then the layer's compressed entries (HCA: all visible; CSA: the indexer's picks),
// built on the device from device positions so it runs inside the decode CUDA graph. Producing
// the picks (indexer top-k) and the cache rows themselves is other kernels' work.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// For each query row q with position p = pos[q]: first the window, positions max(0, p−window+1) … p
// in increasing order at slot (position % ring); then compressed entries at slot comp_base + j:
// HCA (ratio 128) every visible j < (p+1)/ratio (§7 visibility), CSA (ratio 4) the indexer picks
// topk[q][i] that are >= 0, in their order; sliding (ratio 0) none. The rest of the row is −1.
// If more entries are visible than n_idx holds, the first n_idx are written (never out of bounds);
// the caller sizes n_idx = window + the largest compressed count so this does not happen.
struct AttnIndexParams {
  const int32_t* pos = nullptr;   // [n_q] query positions
  const int32_t* topk = nullptr;  // [n_q, topk_k] CSA picks (entry numbers, −1 = none), else nullptr
  int32_t* indices = nullptr;     // [n_q, n_idx] out: cache slots, −1 = masked
  int n_q = 0, window = 0, ring = 0, comp_base = 0, ratio = 0, topk_k = 0, n_idx = 0;
};

void launch_attention_indices(const AttnIndexParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
