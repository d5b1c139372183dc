// Kernel launches with programmatic dependent launch (PDL, sm_90): a kernel launched through
// launch_kernel() may be scheduled while the kernel before it on the stream is still finishing,
// so its launch latency and block dispatch overlap the predecessor's tail instead of following
// it. A decode step is ~260 short dependent kernels (bench/results/2026-12-04-h200-pdl.md), so
// that gap is a visible share of it.
//
// The rule that keeps this correct: every kernel launched through launch_kernel() calls
// wait_for_prior_grids() before its first global-memory access (read or write). That call
// returns once every grid it depends on has completed and its writes are visible, exactly the
// guarantee of ordinary stream order; without the launch attribute (DSV4_PDL=0, or a kernel
// after a copy, a host node or a library kernel) it returns at once. Nothing in a kernel before
// the call may touch global memory; parameters, shared memory and registers are fine.
//
// DSV4_PDL=0 launches without the attribute (for A/B measurements); read once per process.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <utility>

#include "cuda/cuda_check.h"

namespace dsv4::cuda {

__device__ __forceinline__ void wait_for_prior_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Whether launches carry the PDL attribute (DSV4_PDL unset or not "0"). Host side.
bool pdl_enabled();

// Above 48 KB of dynamic shared memory a kernel needs an opt-in, once per device: a host call,
// never a stream operation (legal during graph capture). `raised` is the kernel's own record of
// the devices done (a function-local static next to the launch).
void opt_in_shared_memory(const void* kernel, size_t bytes, std::atomic<uint64_t>& raised);

// How many blocks of `kernel` fit on the current device at once (SMs × blocks per SM at this
// block size and dynamic shared memory): the size of a persistent grid, or the cap of a grid whose
// blocks stride over their work. The shared-memory opt-in is a per-device attribute and two
// devices of one process need not have the same SM count, so both are kept per device in the
// launch's own record (a function-local static next to it). Host-side queries, legal during
// graph capture.
constexpr int kMaxDevices = 64;
struct ResidentGrid {
  std::atomic<uint64_t> raised{0};                     // opt_in_shared_memory's devices
  std::array<std::atomic<int>, kMaxDevices> blocks{};  // 0 = not asked yet
};
int resident_blocks(ResidentGrid& record, const void* kernel, int threads, size_t smem);

template <typename... KernelArgs, typename... Args>
void launch_kernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = 1;
  DSV4_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace dsv4::cuda
