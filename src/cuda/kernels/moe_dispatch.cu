// MoE dispatch plan kernels and launchers; see moe_dispatch.cuh for the contract.
// Counting is one block (shared-memory histogram: the counts do not depend on the order of the
// atomics), then a block-wide exclusive scan. Filling is one warp per expert walking the pick
// list 32 picks at a time: a ballot of "picks this expert" and its prefix popcount give each
// match its position, so positions follow the list order (row, then slot) on every run.
#include "cuda/kernels/moe_dispatch.cuh"

#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {

MoeDispatchPlan MoeDispatchPlan::carve(DeviceArena& arena, int E, int max_rows, int k) {
  MoeDispatchPlan p;
  const size_t n = size_t(max_rows) * size_t(k);
  p.counts = arena.take<int32_t>(size_t(E));
  p.offsets = arena.take<int32_t>(size_t(E) + 1);
  p.sel_row = arena.take<int32_t>(n);
  p.sel_slot = arena.take<int32_t>(n);
  p.sel_weight = arena.take<float>(n);
  p.pos_of = arena.take<int32_t>(n);
  p.E = E;
  p.max_rows = max_rows;
  p.k = k;
  return p;
}

namespace {

constexpr int kCountThreads = 1024;  // one thread per expert in the scan (E <= 1024)
constexpr int kFillWarps = 8;        // experts per fill block
constexpr int kFillUnroll = 4;       // 32-pick slices loaded before the first ballot
static_assert(kCountThreads == kDispatchMaxExperts, "the scan gives each expert one thread");

__device__ __forceinline__ int real_rows(const MoeDispatchParams& p) {
  return p.n_real ? min(max(*p.n_real, 0), p.T) : p.T;
}

__global__ void __launch_bounds__(kCountThreads) dispatch_count_kernel(MoeDispatchParams p) {
  wait_for_prior_grids();
  __shared__ int count[kDispatchMaxExperts];
  __shared__ int warp_total[kCountThreads / kWarpSize];
  const int E = p.plan.E, k = p.plan.k, n = p.T * k, n_real = real_rows(p);
  const int tid = threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  if (tid < E) count[tid] = 0;
  __syncthreads();
  for (int s = tid; s < n; s += kCountThreads) {
    const int e = p.expert_idx[s] - p.expert_base;  // local id; other ranks' picks fall outside [0, E)
    if (s / k < n_real && e >= 0 && e < E) atomicAdd(&count[e], 1);
    p.plan.pos_of[s] = -1;  // the fill kernel overwrites the selections' entries
  }
  __syncthreads();
  // Exclusive scan of count[0..E): warp inclusive scans, then the scan of the warp totals.
  const int v = tid < E ? count[tid] : 0;
  int incl = v;
#pragma unroll
  for (int o = 1; o < kWarpSize; o *= 2) {
    const int u = __shfl_up_sync(kFullMask, incl, o);
    if (lane >= o) incl += u;
  }
  if (lane == kWarpSize - 1) warp_total[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int w = warp_total[lane];
#pragma unroll
    for (int o = 1; o < kWarpSize; o *= 2) {
      const int u = __shfl_up_sync(kFullMask, w, o);
      if (lane >= o) w += u;
    }
    warp_total[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  const int excl = incl - v + (warp > 0 ? warp_total[warp - 1] : 0);
  if (tid < E) {
    p.plan.counts[tid] = v;
    p.plan.offsets[tid] = excl;
  }
  if (tid == 0) p.plan.offsets[E] = warp_total[kCountThreads / kWarpSize - 1];
}

__global__ void __launch_bounds__(kFillWarps * kWarpSize) dispatch_fill_kernel(MoeDispatchParams p) {
  wait_for_prior_grids();
  const int e = blockIdx.x * kFillWarps + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (e >= p.plan.E) return;  // whole warp
  int j = p.plan.offsets[e];
  const int end = p.plan.offsets[e + 1];
  const int k = p.plan.k, n = p.T * k, n_real = real_rows(p);
  const unsigned lanes_below = (1u << lane) - 1u;
  for (int s0 = 0; s0 < n && j < end; s0 += kFillUnroll * kWarpSize) {
    int picked[kFillUnroll];
#pragma unroll
    for (int u = 0; u < kFillUnroll; ++u) {
      const int s = s0 + u * kWarpSize + lane;
      picked[u] = s < n ? p.expert_idx[s] - p.expert_base : -1;  // local id, as in the count
    }
#pragma unroll
    for (int u = 0; u < kFillUnroll; ++u) {
      const int s = s0 + u * kWarpSize + lane;
      const int t = s / k;
      const bool match = picked[u] == e && t < n_real;  // s >= n carries −1, never a match
      const unsigned mask = __ballot_sync(kFullMask, match);
      if (match) {
        const int at = j + __popc(mask & lanes_below);
        p.plan.sel_row[at] = t;
        p.plan.sel_slot[at] = s - t * k;
        p.plan.sel_weight[at] = p.expert_weight[s];
        p.plan.pos_of[s] = at;
      }
      j += __popc(mask);
    }
  }
}

}  // namespace

void launch_moe_dispatch(const MoeDispatchParams& p, cudaStream_t stream) {
  const MoeDispatchPlan& pl = p.plan;
  DSV4_CHECK_MSG(pl.E >= 1 && pl.E <= kDispatchMaxExperts && pl.k >= 1, "moe_dispatch: E=", pl.E, " k=", pl.k);
  DSV4_CHECK_MSG(p.T >= 0 && p.T <= pl.max_rows && int64_t(pl.max_rows) * pl.k <= INT32_MAX,
                 "moe_dispatch: T=", p.T, " max_rows=", pl.max_rows, " k=", pl.k);
  DSV4_CHECK(pl.counts && pl.offsets && pl.sel_row && pl.sel_slot && pl.sel_weight && pl.pos_of);
  DSV4_CHECK(p.T == 0 || (p.expert_idx && p.expert_weight));
  DSV4_CHECK_MSG(p.expert_base >= 0 && p.expert_base <= INT32_MAX - pl.E, "moe_dispatch: expert_base=", p.expert_base);
  // T = 0 still runs the count kernel: the offsets (all zero) must be valid for the launches after.
  launch_kernel(dispatch_count_kernel, 1, kCountThreads, 0, stream, p);
  if (p.T == 0) return;
  launch_kernel(dispatch_fill_kernel, (pl.E + kFillWarps - 1) / kFillWarps, kFillWarps * kWarpSize, 0, stream, p);
}

}  // namespace dsv4::cuda
