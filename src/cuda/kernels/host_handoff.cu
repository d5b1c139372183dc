// The host tier's mailbox (host_handoff.cuh): system-scope release and acquire on mapped memory,
// so the host sees `call` with the ticket and the GPU sees the host's outputs with `done`.
#include "cuda/kernels/host_handoff.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {

namespace {

__device__ __forceinline__ void store_release_system(uint64_t* p, uint64_t v) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ uint64_t load_acquire_system(const uint64_t* p) {
  uint64_t v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

__global__ void signal_host_kernel(HostMailbox* box, uint64_t* counter, uint64_t call) {
  wait_for_prior_grids();
  const uint64_t ticket = *counter + 1;
  *counter = ticket;
  box->call = call;
  store_release_system(&box->ticket, ticket);
}

__global__ void wait_for_host_kernel(const HostMailbox* box, const uint64_t* counter) {
  wait_for_prior_grids();
  const uint64_t ticket = *counter;
  // Each poll is a read across the bus; a host call takes tens of µs or more, so a short sleep
  // between polls costs nothing and keeps the bus free for the gather beside it.
  while (load_acquire_system(&box->done) < ticket) __nanosleep(500);
}

}  // namespace

void launch_signal_host(HostMailbox* box, uint64_t* counter, uint64_t call, cudaStream_t stream) {
  DSV4_CHECK(box && counter);
  launch_kernel(signal_host_kernel, 1, 1, 0, stream, box, counter, call);
}

void launch_wait_for_host(const HostMailbox* box, const uint64_t* counter, cudaStream_t stream) {
  DSV4_CHECK(box && counter);
  launch_kernel(wait_for_host_kernel, 1, 1, 0, stream, box, counter);
}

}  // namespace dsv4::cuda
