// Row gather (gather_rows.cuh): a block per row, 16-byte copies.
#include "cuda/kernels/gather_rows.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void gather_rows_kernel(GatherRowsParams p) {
  wait_for_prior_grids();
  const int i = blockIdx.x;
  const int32_t row = p.index[i];
  uint4* dst = reinterpret_cast<uint4*>(p.dst + int64_t(i) * p.width);
  if (row < 0) {
    if (p.keep_negative) return;
    for (int64_t k = threadIdx.x; k < p.width / 8; k += kThreads) dst[k] = make_uint4(0, 0, 0, 0);
    return;
  }
  const uint4* src = reinterpret_cast<const uint4*>(p.src + int64_t(row) * p.width);
  for (int64_t k = threadIdx.x; k < p.width / 8; k += kThreads) dst[k] = src[k];
}

}  // namespace

void launch_gather_rows(const GatherRowsParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.src && p.index && p.dst && p.n >= 0 && p.width > 0 && p.width % 8 == 0);
  if (p.n == 0) return;
  launch_kernel(gather_rows_kernel, p.n, kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
