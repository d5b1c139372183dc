// The PTX pieces the wgmma kernels share (moe_grouped_wgmma.cu, skinny_wgmma.cu): cp.async
// staging into shared memory, the proxy fence between it and the tensor core's reads, the
// wgmma group fences, and the shared-memory matrix descriptor of a K-major operand in the
// 128-byte swizzle (PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate").
// Device code only; included by .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda::wgmma_ptx {

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared, bypassing L1; zero-filled when !valid (src is then not read).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}
// Shared-memory writes of the generic proxy (cp.async, st.shared) made visible to the async
// proxy that wgmma reads through.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}

// Shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format") of a K-major operand in the
// 128-byte swizzle: start address >> 4, leading offset (unused by swizzled K-major layouts) 1,
// stride between 8-row core-matrix groups 1024 bytes, swizzle mode 1 (128 bytes).
__device__ __forceinline__ uint64_t sw128_descriptor(uint32_t address) {
  return uint64_t((address & 0x3ffffu) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}

}  // namespace dsv4::cuda::wgmma_ptx
