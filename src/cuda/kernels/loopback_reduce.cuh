// The loopback all-reduce kernel: R virtual ranks' BF16 buffers on one GPU summed element-wise
// into every rank's output. The Collective around it (rank checks, in-place use) is collective.h's.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>

namespace dsv4::cuda {

// Ranks one loopback reduce can hold: a node's GPU count (an H200 host has 8), so one card can
// play every rank of a single-host expert-parallel replica.
constexpr int kMaxLoopbackRanks = 8;

// out[r][i] = bf16(in[0][i] + in[1][i] + ... + in[ranks-1][i]) for r < ranks, i < count: FP32
// accumulation in rank order, one round-to-nearest-even at the end (so it matches a scalar loop
// bit for bit). Every thread reads all ranks' values of its elements before writing any, so
// out[r] may be in[r] (in place); otherwise an output overlaps no input and no other output.
struct LoopbackReduceParams {
  const __nv_bfloat16* in[kMaxLoopbackRanks] = {};  // [count] bf16 per rank r < ranks
  __nv_bfloat16* out[kMaxLoopbackRanks] = {};       // [count] bf16 per rank r < ranks
  int ranks = 0;                                    // 1..kMaxLoopbackRanks
  size_t count = 0;
};
void launch_loopback_reduce(const LoopbackReduceParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
