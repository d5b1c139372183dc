// Chunk key-row gather kernel and launcher; see kv_gather.cuh for the contract. One thread per
// four dims of a row (kv_rows.cuh's conversion), whole rows per block; rows are independent.
#include "cuda/kernels/kv_gather.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/kv_rows.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;

template <int D>
__global__ void __launch_bounds__(kThreads) kv_gather_kernel(KvGatherParams p) {
  constexpr int kThreadsPerRow = D / 4, kRowsPerBlock = kThreads / kThreadsPerRow;
  wait_for_prior_grids();
  const int r = blockIdx.x * kRowsPerBlock + threadIdx.x / kThreadsPerRow;
  if (r >= p.n_window + p.n_entries) return;
  const int slot = p.rows.slot[p.first], pos0 = p.rows.pos[p.first];
  int src, dst;
  if (r < p.n_window) {
    const int pos = chunk_window_base(pos0, p.window) + r;
    src = pos >= pos0 ? p.pass_base + p.first + (pos - pos0) : p.ring_base + slot * p.ring_rows + pos % p.ring_rows;
    dst = r;
  } else {
    const int j = r - p.n_window;
    src = p.comp_base + paged_entry_row(p.pages, slot, j, p.per_block);
    dst = p.entry_row0 + j;
  }
  const int64_t page_bytes = kv_page_bytes(p.block_size, D);
  const int d = threadIdx.x % kThreadsPerRow * 4;
  const uint2 v = kv_dims_bf16<D>(kv_row_data<D>(p.cache, p.block_size, page_bytes, src),
                                  kv_row_scales<D>(p.cache, p.block_size, page_bytes, src), d);
  *reinterpret_cast<uint2*>(p.out + int64_t(dst) * D + d) = v;
}

template <int D>
void launch_dim(const KvGatherParams& p, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kThreads / (D / 4);
  const int n = p.n_window + p.n_entries;
  launch_kernel(kv_gather_kernel<D>, (n + kRowsPerBlock - 1) / kRowsPerBlock, kThreads, 0, stream, p);
}

}  // namespace

void launch_kv_gather(const KvGatherParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.cache && p.out && p.rows.pos && p.rows.slot);
  DSV4_CHECK_MSG(kv_dim_supported(p.dim), "kv_gather: dim=", p.dim, " (supported: ", kKvDimNano, ", ", kKvDimV4, ")");
  DSV4_CHECK_MSG(p.block_size > 0 && p.first >= 0 && p.n_window >= 0 && p.n_entries >= 0 && p.window >= 1 &&
                     p.ring_rows >= p.window && p.entry_row0 >= p.n_window,
                 "kv_gather: n_window=", p.n_window, " n_entries=", p.n_entries, " entry_row0=", p.entry_row0);
  DSV4_CHECK_MSG(p.n_entries == 0 || (p.pages.pages && p.pages.per_slot >= 1 && p.per_block >= 1),
                 "kv_gather: compressed entries need the page table");
  if (p.n_window + p.n_entries == 0) return;
  if (p.dim == kKvDimV4)
    launch_dim<kKvDimV4>(p, stream);
  else
    launch_dim<kKvDimNano>(p, stream);
}

}  // namespace dsv4::cuda
