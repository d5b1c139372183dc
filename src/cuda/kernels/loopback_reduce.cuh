// The loopback all-reduce kernel: R virtual ranks' buffers on one GPU summed element-wise into every
// rank's output. The Collective around it (rank checks, in-place use) is collective.h's.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>

namespace dsv4::cuda {

// Ranks one loopback reduce can hold: a node's GPU count (an H200 host has 8), so one card can
// play every rank of a single-host expert-parallel replica.
constexpr int kMaxLoopbackRanks = 8;

// out[r][i] = in[0][i] + in[1][i] + ... + in[ranks-1][i] for r < ranks, i < count: FP32 accumulation
// in rank order, rounded once to T at the end (T = __nv_bfloat16, round to nearest even; or float),
// so it matches a scalar loop bit for bit. Every thread reads all ranks' values of its elements
// before writing any, so out[r] may be in[r] (in place); otherwise an output overlaps no input and
// no other output.
template <typename T>
struct LoopbackReduceParams {
  const T* in[kMaxLoopbackRanks] = {};  // [count] per rank r < ranks
  T* out[kMaxLoopbackRanks] = {};       // [count] per rank r < ranks
  int ranks = 0;                        // 1..kMaxLoopbackRanks
  size_t count = 0;
};
// Instantiated for __nv_bfloat16 (the MoE's routed outputs) and float (attention partials).
template <typename T>
void launch_loopback_reduce(const LoopbackReduceParams<T>& p, cudaStream_t stream);

}  // namespace dsv4::cuda
