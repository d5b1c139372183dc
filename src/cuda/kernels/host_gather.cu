// The host tier's decode gather (host_gather.cuh). Grid: (chunk of an expert's bytes, pick). A
// block whose pick is not the host's, or repeats an earlier pick's expert, returns at once; the
// others copy one chunk, each warp 512 contiguous bytes per load, 8 loads in flight per thread.
#include "cuda/kernels/host_gather.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/gemv_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 8;
constexpr size_t kChunkBytes = size_t(kThreads) * kUnroll * 16;  // 32 KiB: one pass of the loop

// The regions' chunks of one expert, laid end to end: chunk c is in region r when
// start[r] <= c < start[r + 1].
struct ChunkStarts {
  int start[kHostGatherMaxRegions + 1];
};

__global__ void __launch_bounds__(kThreads) gather_host_experts_kernel(GatherHostExpertsParams p, ChunkStarts cs) {
  wait_for_prior_grids();
  const int pick = blockIdx.y, t = pick / p.k;
  const int n_real = p.n_real ? *p.n_real : p.T;
  const int e = p.expert_idx[pick];
  if (t >= n_real || e < p.first || e >= p.end) return;
  for (int q = 0; q < pick; ++q)  // the first pick of an expert copies it
    if (p.expert_idx[q] == e && q / p.k < n_real) return;
  int r = 0;
  while (int(blockIdx.x) >= cs.start[r + 1]) ++r;
  const HostGatherRegion& g = p.regions[r];
  const size_t j = size_t(e - p.first);
  const size_t begin = size_t(blockIdx.x - cs.start[r]) * kChunkBytes;
  const size_t end = min(begin + kChunkBytes, g.per_expert);
  const uint8_t* src = g.src + j * g.per_expert;
  uint8_t* dst = g.dst + j * g.per_expert;
  if (g.per_expert % 16 != 0) {  // a global scale: 4 bytes a word
    for (size_t b = begin + 4 * threadIdx.x; b < end; b += 4 * kThreads)
      *reinterpret_cast<uint32_t*>(dst + b) = *reinterpret_cast<const uint32_t*>(src + b);
    return;
  }
  uint4 v[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const size_t b = begin + (size_t(u) * kThreads + threadIdx.x) * 16;
    if (b < end) v[u] = load_stream(src + b);
  }
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const size_t b = begin + (size_t(u) * kThreads + threadIdx.x) * 16;
    if (b < end) *reinterpret_cast<uint4*>(dst + b) = v[u];
  }
}

}  // namespace

void launch_gather_host_experts(const GatherHostExpertsParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.T >= 0 && p.k > 0 && p.first <= p.end && p.n_regions >= 1 && p.n_regions <= kHostGatherMaxRegions);
  if (p.T == 0) return;
  DSV4_CHECK(p.expert_idx);
  ChunkStarts cs{};
  for (int r = 0; r < p.n_regions; ++r) {
    const HostGatherRegion& g = p.regions[r];
    DSV4_CHECK_MSG(g.src && g.dst && g.per_expert > 0 && g.per_expert % 4 == 0, "host gather: region ", r);
    DSV4_CHECK(reinterpret_cast<uintptr_t>(g.src) % 16 == 0 && reinterpret_cast<uintptr_t>(g.dst) % 16 == 0);
    cs.start[r + 1] = cs.start[r] + int((g.per_expert + kChunkBytes - 1) / kChunkBytes);
  }
  launch_kernel(gather_host_experts_kernel, dim3(unsigned(cs.start[p.n_regions]), unsigned(p.T * p.k)), kThreads, 0,
                stream, p, cs);
}

}  // namespace dsv4::cuda
