// Attention index-list kernel and launcher; see attention_indices.cuh for the contract.
// One block per query row. Every thread fills row entries i, i+256, …: a window slot, an HCA
// entry or −1 (all closed-form in i). CSA then overwrites the entries after the window with the
// valid picks, compacted in order: per 256-pick chunk a warp ballot gives each pick its rank
// inside the warp and the per-warp counts in shared memory give the warp's offset. The valid
// entries are a prefix of the row; its length goes to `count` for sparse_attention.
#include "cuda/kernels/attention_indices.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/kv_gather.cuh"
#include "cuda/kernels/launch.cuh"
#include "model/config.h"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;

__global__ void __launch_bounds__(kThreads) attention_indices_kernel(AttnIndexParams p) {
  wait_for_prior_grids();
  const int q = blockIdx.x, r = p.row0 + q;
  const int t = p.rows.pos[r];
  int32_t* row = p.indices + int64_t(q) * p.n_idx;
  if (t < 0) {  // padding row: attends nothing (block-uniform)
    for (int i = threadIdx.x; i < p.n_idx; i += kThreads) row[i] = -1;
    if (p.count && threadIdx.x == 0) p.count[q] = 0;
    return;
  }
  const int slot = p.rows.slot[r], chunk_row = p.rows.first[r], pos0 = p.rows.pos[chunk_row];
  const int n_win = min(t + 1, p.window);  // §4.3: positions t−n_win+1 … t
  const int first = t - n_win + 1;
  const int n_hca = p.ratio == kHcaRatio ? (t + 1) / kHcaRatio : 0;  // §7: j < (t+1)/128
  const int ring = p.ring_base + slot * p.ring_rows;
  const bool chunk_rows = p.entry_row0 >= 0;  // kv_gather.cuh's rows instead of pool rows
  const int wbase = chunk_window_base(pos0, p.window);
  const auto entry_row = [&](int j) {
    return chunk_rows ? p.entry_row0 + j : p.comp_base + paged_entry_row(p.pages, slot, j, p.per_block);
  };
  for (int i = threadIdx.x; i < p.n_idx; i += kThreads) {
    int32_t v = -1;
    if (i < n_win) {
      const int pos = first + i;
      v = chunk_rows ? pos - wbase : pos >= pos0 ? p.pass_base + chunk_row + (pos - pos0) : ring + pos % p.ring_rows;
    } else if (i - n_win < n_hca) {
      v = entry_row(i - n_win);
    }
    row[i] = v;
  }
  if (p.ratio != kCsaRatio) {  // uniform over the block
    if (p.count && threadIdx.x == 0) p.count[q] = min(n_win + n_hca, p.n_idx);
    return;
  }

  __syncthreads();  // the picks overwrite −1s that other threads of this block wrote
  __shared__ int warp_count[kWarps];
  const int32_t* picks = p.topk + int64_t(q) * p.topk_k;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  int base = n_win;  // row entry of the chunk's first valid pick
  for (int c0 = 0; c0 < p.topk_k; c0 += kThreads) {
    const int i = c0 + threadIdx.x;
    const int32_t j = i < p.topk_k ? picks[i] : -1;
    const unsigned valid = __ballot_sync(kFullMask, j >= 0);
    if (lane == 0) warp_count[warp] = __popc(valid);
    __syncthreads();
    int dst = base + __popc(valid & ((1u << lane) - 1u)), total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) dst += warp_count[w];
      total += warp_count[w];
    }
    if (j >= 0 && dst < p.n_idx) row[dst] = entry_row(j);
    base += total;
    __syncthreads();  // warp_count is rewritten by the next chunk
  }
  if (p.count && threadIdx.x == 0) p.count[q] = min(base, p.n_idx);
}

}  // namespace

void launch_attention_indices(const AttnIndexParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.rows.pos && p.rows.slot && p.rows.first && p.indices);
  DSV4_CHECK_MSG(p.n_q >= 0 && p.row0 >= 0 && p.n_idx >= 0 && p.window >= 1 && p.pass_base >= 0 && p.ring_base >= 0,
                 "attention_indices: n_q=", p.n_q, " n_idx=", p.n_idx, " window=", p.window);
  // A ring shorter than the window would hand a query rows that later positions overwrote.
  DSV4_CHECK_MSG(p.ring_rows >= p.window, "attention_indices: ring_rows=", p.ring_rows, " < window=", p.window);
  DSV4_CHECK_MSG(p.ratio == 0 || p.ratio == kCsaRatio || p.ratio == kHcaRatio, "attention_indices: ratio=", p.ratio);
  DSV4_CHECK_MSG(p.ratio == 0 || (p.pages.pages && p.pages.per_slot >= 1 && p.per_block >= 1),
                 "attention_indices: a compressed layer needs its page table");
  DSV4_CHECK_MSG(p.ratio == kCsaRatio ? p.topk && p.topk_k >= 1 : !p.topk, "attention_indices: ratio=", p.ratio,
                 " topk=", p.topk ? "set" : "null", " topk_k=", p.topk_k);
  if (p.n_q == 0) return;
  launch_kernel(attention_indices_kernel, p.n_q, kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
