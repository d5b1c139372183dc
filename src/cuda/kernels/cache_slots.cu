// Device-side cache-row arithmetic (cache_slots.cuh): one thread per row.
#include "cuda/kernels/cache_slots.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kThreads = 128;

__global__ void window_slots_kernel(WindowSlotParams p) {
  wait_for_prior_grids();
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= p.n) return;
  const int32_t pos = p.rows.pos[r];
  if (pos < 0) {
    p.pass_slot[r] = -1;
    p.ring_slot[r] = -1;
    return;
  }
  p.pass_slot[r] = p.pass_base + r;
  const int32_t last_pos = p.rows.pos[p.rows.last[r]];
  p.ring_slot[r] = last_pos - pos < p.ring_rows
                       ? p.ring_base + p.rows.slot[r] * p.ring_rows + pos % p.ring_rows
                       : -1;
}

__global__ void entry_slots_kernel(EntrySlotParams p) {
  wait_for_prior_grids();
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= p.n) return;
  const int32_t j = p.entry_idx[r];
  p.out[r] = j < 0 ? -1 : p.base + paged_entry_row(p.pages, p.rows.slot[r], j, p.per_block);
}

}  // namespace

void launch_window_slots(const WindowSlotParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.rows.pos && p.rows.slot && p.rows.last && p.pass_slot && p.ring_slot);
  DSV4_CHECK_MSG(p.n >= 0 && p.pass_base >= 0 && p.ring_base >= 0 && p.ring_rows >= 1, "window_slots: n=", p.n,
                 " pass_base=", p.pass_base, " ring_base=", p.ring_base, " ring_rows=", p.ring_rows);
  if (p.n == 0) return;
  launch_kernel(window_slots_kernel, (p.n + kThreads - 1) / kThreads, kThreads, 0, stream, p);
}

void launch_entry_slots(const EntrySlotParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.rows.slot && p.pages.pages && p.entry_idx && p.out);
  DSV4_CHECK(p.n >= 0 && p.base >= 0 && p.per_block >= 1 && p.pages.per_slot >= 1);
  if (p.n == 0) return;
  launch_kernel(entry_slots_kernel, (p.n + kThreads - 1) / kThreads, kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
