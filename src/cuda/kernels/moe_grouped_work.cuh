// What the grouped expert GEMM kernels share (moe_grouped_gemm.cu: the F16 mma.sync kernels;
// moe_grouped_wgmma.cu: the FP8 wgmma prefill kernel): the work list a block derives from the
// dispatch plan, and the parameter-pair select (the persistent grid's size is launch.cuh's
// resident_blocks). Included by those two files only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda::moe_grouped_work {

// The work list of a launch, computed by every block from the plan (E <= kGroupedMaxExperts):
// offs = offsets[0..E], chunk_start[e] = Σ_{e' < e} ceil(count_e' / R) (chunk_start[E] = all
// chunks). Warp 0 scans, lanes taking contiguous expert ranges. Ends with a __syncthreads.
__device__ inline void plan_chunks(const int32_t* offsets, int E, int R, int* offs, int* chunk_start) {
  const int tid = threadIdx.x, lane = tid % kWarpSize;
  for (int e = tid; e <= E; e += blockDim.x) offs[e] = offsets[e];
  __syncthreads();
  if (tid < kWarpSize) {
    const int per = (E + kWarpSize - 1) / kWarpSize, e0 = min(lane * per, E), e1 = min(e0 + per, E);
    int local = 0;
    for (int e = e0; e < e1; ++e) local += (offs[e + 1] - offs[e] + R - 1) / R;
    int incl = local;
#pragma unroll
    for (int o = 1; o < kWarpSize; o *= 2) {
      const int u = __shfl_up_sync(kFullMask, incl, o);
      if (lane >= o) incl += u;
    }
    int run = incl - local;
    for (int e = e0; e < e1; ++e) {
      chunk_start[e] = run;
      run += (offs[e + 1] - offs[e] + R - 1) / R;
    }
    if (lane == kWarpSize - 1) chunk_start[E] = incl;
  }
  __syncthreads();
}

// Element m (0 or 1) of a two-entry parameter array (MoeGroupedParams::w, y, ...), as a select: a
// run-time index into the kernel's parameters would copy them to local memory.
template <typename T>
__device__ __forceinline__ T pick(T const (&a)[2], int m) {
  return m == 0 ? a[0] : a[1];
}

}  // namespace dsv4::cuda::moe_grouped_work
