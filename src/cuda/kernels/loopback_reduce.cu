// Loopback all-reduce (loopback_reduce.cuh): one grid-stride pass, 8 BF16 values per 16-byte access
// when every buffer is 16-byte aligned, one value per access for the tail and for unaligned buffers.
#include "cuda/kernels/loopback_reduce.cuh"

#include <algorithm>
#include <cstdint>

#include "cuda/cuda_check.h"

namespace dsv4::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kVecElems = 8;  // BF16 values in one 16-byte access
// Enough blocks to fill an H200 (132 SMs, 8 resident blocks of 256 threads each = 2048 threads per
// SM); larger counts stride.
constexpr int kMaxBlocks = 132 * 8;

// Elements v·8 .. v·8+7 of every rank. All R loads are issued before any add (R 16-byte requests
// in flight per thread), and all sums are formed before any store, which is what makes in place safe.
template <int R>
__device__ __forceinline__ void reduce_vector(const LoopbackReduceParams& p, size_t v) {
  uint4 raw[R];
#pragma unroll
  for (int r = 0; r < R; ++r) raw[r] = reinterpret_cast<const uint4*>(p.in[r])[v];
  float acc[kVecElems];
#pragma unroll
  for (int j = 0; j < kVecElems / 2; ++j) {
    // Rank 0 starts the sum rather than 0.0f, so a lone −0 stays −0 as in the scalar reference.
    float2 s = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162*>(&raw[0])[j]);
#pragma unroll
    for (int r = 1; r < R; ++r) {
      const float2 x = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162*>(&raw[r])[j]);
      s.x += x.x;
      s.y += x.y;
    }
    acc[2 * j] = s.x;
    acc[2 * j + 1] = s.y;
  }
  uint4 sum;
  __nv_bfloat162* sum_pairs = reinterpret_cast<__nv_bfloat162*>(&sum);
#pragma unroll
  for (int j = 0; j < kVecElems / 2; ++j) sum_pairs[j] = __floats2bfloat162_rn(acc[2 * j], acc[2 * j + 1]);
#pragma unroll
  for (int r = 0; r < R; ++r) reinterpret_cast<uint4*>(p.out[r])[v] = sum;
}

// Element i of every rank, the same order of operations as reduce_vector.
template <int R>
__device__ __forceinline__ void reduce_scalar(const LoopbackReduceParams& p, size_t i) {
  float x[R];
#pragma unroll
  for (int r = 0; r < R; ++r) x[r] = __bfloat162float(p.in[r][i]);
  float s = x[0];
#pragma unroll
  for (int r = 1; r < R; ++r) s += x[r];
  const __nv_bfloat16 sum = __float2bfloat16_rn(s);
#pragma unroll
  for (int r = 0; r < R; ++r) p.out[r][i] = sum;
}

// R is a template argument so that the rank loops unroll and p.in[r] / p.out[r] are constant
// parameter reads. kVector: the first count/8·8 elements go 8 at a time, the tail one at a time.
template <int R, bool kVector>
__global__ void __launch_bounds__(kThreads) loopback_reduce_kernel(const LoopbackReduceParams p) {
  const size_t first = size_t(blockIdx.x) * kThreads + threadIdx.x, stride = size_t(gridDim.x) * kThreads;
  size_t scalar_begin = 0;
  if constexpr (kVector) {
    const size_t n_vec = p.count / kVecElems;
    for (size_t v = first; v < n_vec; v += stride) reduce_vector<R>(p, v);
    scalar_begin = n_vec * kVecElems;
  }
  for (size_t i = scalar_begin + first; i < p.count; i += stride) reduce_scalar<R>(p, i);
}

template <int R>
void launch_for_ranks(const LoopbackReduceParams& p, bool vector, int blocks, cudaStream_t stream) {
  if constexpr (R <= kMaxLoopbackRanks) {
    if (p.ranks != R) return launch_for_ranks<R + 1>(p, vector, blocks, stream);
    if (vector)
      loopback_reduce_kernel<R, true><<<blocks, kThreads, 0, stream>>>(p);
    else
      loopback_reduce_kernel<R, false><<<blocks, kThreads, 0, stream>>>(p);
    DSV4_CUDA_CHECK_LAUNCH();
  }
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

void launch_loopback_reduce(const LoopbackReduceParams& p, cudaStream_t stream) {
  DSV4_CHECK_MSG(p.ranks >= 1 && p.ranks <= kMaxLoopbackRanks, "ranks = ", p.ranks);
  bool vector = true;
  for (int r = 0; r < p.ranks; ++r) {
    DSV4_CHECK(p.in[r] && p.out[r]);
    vector = vector && aligned16(p.in[r]) && aligned16(p.out[r]);
  }
  if (p.count == 0) return;
  // Threads needed: one per 16-byte vector, or one per tail element if there are more of those.
  const size_t work = vector ? std::max(p.count / kVecElems, p.count % kVecElems) : p.count;
  const int blocks = int(std::min<size_t>((work + kThreads - 1) / kThreads, kMaxBlocks));
  launch_for_ranks<1>(p, vector, blocks, stream);
}

}  // namespace dsv4::cuda
