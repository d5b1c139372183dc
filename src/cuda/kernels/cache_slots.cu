// Device-side cache-slot arithmetic (cache_slots.cuh).
#include "cuda/kernels/cache_slots.cuh"

#include "cuda/cuda_check.h"

namespace dsv4::cuda {

namespace {

__global__ void cache_slots_kernel(CacheSlotParams p) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= p.n) return;
  const int32_t v = p.in[i];
  p.out[i] = v < 0 ? -1 : p.base + (p.modulo > 0 ? v % p.modulo : v);
}

}  // namespace

void launch_cache_slots(const CacheSlotParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.in && p.out && p.n >= 1 && p.base >= 0 && p.modulo >= 0);
  constexpr int kThreads = 128;
  cache_slots_kernel<<<(p.n + kThreads - 1) / kThreads, kThreads, 0, stream>>>(p);
  DSV4_CUDA_CHECK_LAUNCH();
}

}  // namespace dsv4::cuda
