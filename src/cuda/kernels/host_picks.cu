// The host tier's hand-back (host_picks.cuh): one block per pick; a block whose pick is not the
// host's returns at once, so only the host's rows cross the bus (16-byte reads of mapped memory).
#include "cuda/kernels/host_picks.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kThreads = 128;

__global__ void take_host_picks_kernel(TakeHostPicksParams p) {
  wait_for_prior_grids();
  const int pick = blockIdx.x, t = pick / p.k;
  const int n_real = p.n_real ? *p.n_real : p.T;
  const int e = p.expert_idx[pick];
  if (t >= n_real || e < p.first || e >= p.end) return;
  const size_t row = size_t(pick) * size_t(p.D) / 8;  // uint4 = 8 BF16
  const uint4* src = reinterpret_cast<const uint4*>(p.host) + row;
  uint4* dst = reinterpret_cast<uint4*>(p.picks) + row;
  for (int c = threadIdx.x; c < p.D / 8; c += kThreads) dst[c] = src[c];
}

}  // namespace

void launch_take_host_picks(const TakeHostPicksParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.T >= 0 && p.k > 0 && p.D > 0 && p.D % 8 == 0 && p.first <= p.end);
  if (p.T == 0) return;
  DSV4_CHECK(p.host && p.expert_idx && p.picks);
  launch_kernel(take_host_picks_kernel, unsigned(p.T * p.k), kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
