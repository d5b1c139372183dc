// The host tier's decode gather (cuda/host_experts.h, the bus's share of a decode pass): the
// weights of the host experts a pass picked, copied from pinned host memory (its mapped addresses)
// into the GPU's staging experts, where the grouped GEMM then reads them at device speed.
//
// Why a copy and not the GEMM reading host memory in place: the GEMM reads 64 contiguous bytes of
// a weight row per K group, and reads of 64 bytes cross the bus at 43.6 GB/s on an H100, against
// 51.4 GB/s for 128 bytes or more and 55.5 GB/s for cudaMemcpyAsync (bench/results/
// 2026-12-06-h100-host-tier-bus.md). This kernel's warps read 512 contiguous bytes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace dsv4::cuda {

// Every matrix part of a layer's host experts stored expert after expert (host_experts.cpp's
// pinned block, and DeviceExperts' data / scale / global scale): expert j's bytes are
// [j·per_expert, (j + 1)·per_expert) of src and of dst.
struct HostGatherRegion {
  const uint8_t* src = nullptr;  // mapped pinned host memory (PinnedBuffer::device())
  uint8_t* dst = nullptr;        // device memory
  size_t per_expert = 0;         // bytes; a multiple of 16, or of 4 (NVFP4's global scale)
};

constexpr int kHostGatherMaxRegions = 9;  // data, scales and global scales of w1, w3 and w2

// For every pick p = t·k + i with t < *n_real, first <= e = expert_idx[p] < end, and no earlier
// such pick of the same expert: copies expert e − first of every region. Other experts' bytes in
// dst are left as they are (the pass's dispatch plan gives them no rows).
struct GatherHostExpertsParams {
  const int32_t* expert_idx = nullptr;  // [T, k]
  const int32_t* n_real = nullptr;      // device int32: rows >= it are padding; nullptr: T
  int T = 0, k = 0;
  int first = 0, end = 0;               // the host's expert ids
  HostGatherRegion regions[kHostGatherMaxRegions];
  int n_regions = 0;
};
void launch_gather_host_experts(const GatherHostExpertsParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
