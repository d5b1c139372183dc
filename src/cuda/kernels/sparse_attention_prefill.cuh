// The prefill kernel of sparse attention (sparse_attention.cuh), for the queries of prefill
// chunks, over BF16 key rows gathered once per chunk (kv_gather.cuh). The decode kernel (sparse_attention.cuh)
// converts every key from the FP8 cache for each query and each group of 16 heads, and spreads a
// query's keys over a cluster of 8 blocks: right for a few queries whose lists must occupy the whole
// GPU, but a prefill chunk has thousands of queries. Here a query is one block and all 64 of its
// heads share each key tile (K = V, MQA-shaped), so a key is loaded once per query and no
// cross-block merge is needed — the shape of FlashMLA's sparse prefill kernel.
//
// Same arithmetic as the decode kernel: BF16 MMAs on exact BF16 keys, FP32 online softmax, P split
// into three BF16 terms, o rounded to BF16 and then rotated back (§4.4). The sums run in another
// order (one pass over the list in 32-key tiles instead of 8 interleaved slices), so the two
// agree to rounding, not bit for bit; their MMA chains are no longer than the decode kernel's, so
// this one rounds off the exact result no more often (tests/cuda/sparse_attention.cpp counts it).
// The forward gives each row class one kernel (a long prefill chunk's rows this one, every other
// row the decode kernel), so a row's bits do not depend on the rest of the step; within this
// kernel a query's output depends only on its own list and rows.
#pragma once

#include <cuda_runtime_api.h>

#include "cuda/kernels/sparse_attention.cuh"

namespace dsv4::cuda {

// The prefill kernel over p.keys (set), launched by launch_sparse_attention after its checks; the
// contract is sparse_attention.cuh's.
void launch_sparse_attention_prefill(const SparseAttnParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
