// Cache-slot arithmetic done on the device so that a captured decode step stays right at every
// position (design.md "StepPlan"): window rows go to ring slots, compressor entries after the ring.
// The cache row format is kv_cache.cuh's; which rows attention reads is attention_indices.cuh's.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda {

// out[i] = in[i] < 0 ? −1 : base + (modulo > 0 ? in[i] % modulo : in[i]).
// Window rows: in = positions, base 0, modulo = ring. Entries: in = entry numbers (−1 = none),
// base = first compressed slot, modulo 0.
struct CacheSlotParams {
  const int32_t* in = nullptr;  // [n]
  int32_t* out = nullptr;       // [n]
  int n = 0, base = 0, modulo = 0;
};
void launch_cache_slots(const CacheSlotParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
