// Loopback all-reduce (loopback_reduce.cuh): one grid-stride pass, 16 bytes per access (8 BF16 or
// 4 FP32 values) when every buffer is 16-byte aligned, one value per access for the tail and for
// unaligned buffers.
#include "cuda/kernels/loopback_reduce.cuh"

#include <algorithm>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kThreads = 256;
// Enough blocks to fill an H200 (132 SMs, 8 resident blocks of 256 threads each = 2048 threads per
// SM); larger counts stride.
constexpr int kMaxBlocks = 132 * 8;

__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(float x) { return x; }
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }

// Values vec·V .. vec·V+V−1 of every rank (V per 16 bytes). All R loads are issued before any add (R
// 16-byte requests in flight per thread), and all sums are formed before any store, which is what
// makes in place safe. Rank 0 starts each sum rather than 0.0f, so a lone −0 stays −0 as in the
// scalar reference.
template <typename T, int R>
__device__ __forceinline__ void reduce_vector(const LoopbackReduceParams<T>& p, size_t vec) {
  constexpr int V = sizeof(uint4) / sizeof(T);
  uint4 raw[R];
#pragma unroll
  for (int r = 0; r < R; ++r) raw[r] = reinterpret_cast<const uint4*>(p.in[r])[vec];
  float acc[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = to_f32(reinterpret_cast<const T*>(&raw[0])[j]);
#pragma unroll
  for (int r = 1; r < R; ++r)
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] += to_f32(reinterpret_cast<const T*>(&raw[r])[j]);
  uint4 sum;
#pragma unroll
  for (int j = 0; j < V; ++j) reinterpret_cast<T*>(&sum)[j] = from_f32<T>(acc[j]);
#pragma unroll
  for (int r = 0; r < R; ++r) reinterpret_cast<uint4*>(p.out[r])[vec] = sum;
}

// Element i of every rank, the same order of operations as reduce_vector.
template <typename T, int R>
__device__ __forceinline__ void reduce_scalar(const LoopbackReduceParams<T>& p, size_t i) {
  float x[R];
#pragma unroll
  for (int r = 0; r < R; ++r) x[r] = to_f32(p.in[r][i]);
  float s = x[0];
#pragma unroll
  for (int r = 1; r < R; ++r) s += x[r];
  const T sum = from_f32<T>(s);
#pragma unroll
  for (int r = 0; r < R; ++r) p.out[r][i] = sum;
}

// R is a template argument so that the rank loops unroll and p.in[r] / p.out[r] are constant
// parameter reads. kVector: the first count/V·V elements go V at a time, the tail one at a time.
template <typename T, int R, bool kVector>
__global__ void __launch_bounds__(kThreads) loopback_reduce_kernel(const LoopbackReduceParams<T> p) {
  wait_for_prior_grids();
  constexpr int V = sizeof(uint4) / sizeof(T);
  const size_t first = size_t(blockIdx.x) * kThreads + threadIdx.x, stride = size_t(gridDim.x) * kThreads;
  size_t scalar_begin = 0;
  if constexpr (kVector) {
    const size_t n_vec = p.count / V;
    for (size_t v = first; v < n_vec; v += stride) reduce_vector<T, R>(p, v);
    scalar_begin = n_vec * V;
  }
  for (size_t i = scalar_begin + first; i < p.count; i += stride) reduce_scalar<T, R>(p, i);
}

template <typename T, int R>
void launch_for_ranks(const LoopbackReduceParams<T>& p, bool vector, int blocks, cudaStream_t stream) {
  if constexpr (R <= kMaxLoopbackRanks) {
    if (p.ranks != R) return launch_for_ranks<T, R + 1>(p, vector, blocks, stream);
    if (vector)
      launch_kernel(loopback_reduce_kernel<T, R, true>, blocks, kThreads, 0, stream, p);
    else
      launch_kernel(loopback_reduce_kernel<T, R, false>, blocks, kThreads, 0, stream, p);
  }
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % sizeof(uint4) == 0; }

}  // namespace

template <typename T>
void launch_loopback_reduce(const LoopbackReduceParams<T>& p, cudaStream_t stream) {
  constexpr size_t V = sizeof(uint4) / sizeof(T);
  DSV4_CHECK_MSG(p.ranks >= 1 && p.ranks <= kMaxLoopbackRanks, "ranks = ", p.ranks);
  bool vector = true;
  for (int r = 0; r < p.ranks; ++r) {
    DSV4_CHECK(p.in[r] && p.out[r]);
    vector = vector && aligned16(p.in[r]) && aligned16(p.out[r]);
  }
  if (p.count == 0) return;
  // Threads needed: one per 16-byte vector, or one per tail element if there are more of those.
  const size_t work = vector ? std::max(p.count / V, p.count % V) : p.count;
  const int blocks = int(std::min<size_t>((work + kThreads - 1) / kThreads, kMaxBlocks));
  launch_for_ranks<T, 1>(p, vector, blocks, stream);
}

template void launch_loopback_reduce<__nv_bfloat16>(const LoopbackReduceParams<__nv_bfloat16>&, cudaStream_t);
template void launch_loopback_reduce<float>(const LoopbackReduceParams<float>&, cudaStream_t);

}  // namespace dsv4::cuda
