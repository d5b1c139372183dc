// FP32 → BF16 (to_bf16.cuh): one grid-stride pass, one value per thread and step.
#include "cuda/kernels/to_bf16.cuh"

#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kThreads = 256;
constexpr size_t kMaxBlocks = 132 * 8;  // fills an H200 (132 SMs); larger buffers stride

__global__ void to_bf16_kernel(ToBf16Params p) {
  wait_for_prior_grids();
  for (size_t i = size_t(blockIdx.x) * kThreads + threadIdx.x; i < p.n; i += size_t(gridDim.x) * kThreads)
    p.dst[i] = __float2bfloat16_rn(p.src[i]);
}

}  // namespace

void launch_to_bf16(const ToBf16Params& p, cudaStream_t stream) {
  DSV4_CHECK(p.n == 0 || (p.src && p.dst));
  if (p.n == 0) return;
  const size_t blocks = std::min(kMaxBlocks, (p.n + kThreads - 1) / kThreads);
  launch_kernel(to_bf16_kernel, unsigned(blocks), kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
