// The host tier's hand-off to the host's cores inside a step (cuda/host_experts.h), through a
// mailbox in mapped pinned memory instead of a host function. A host function (a host node in a
// graph) holds back kernels on every other stream while it runs: measured on an H100, a decode
// step split between the cores and the bus took the sum of the two, not the larger
// (bench/results/2026-12-06-h100-host-tier-split.md), as others have reported on Hopper
// (NVIDIA/nccl#1742). Here a one-thread kernel posts a ticket, a host thread polling the mailbox
// runs the call and posts it back as done, and a second one-thread kernel waits for that on the
// side stream, so only that stream waits for the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// Lives in mapped pinned memory, zeroed before the first signal. The GPU writes `call` and then
// `ticket` (release, system scope); the host reads `ticket` (acquire), runs the call and writes
// `done` = that ticket (release); the GPU reads `done` (acquire).
struct HostMailbox {
  uint64_t ticket;
  uint64_t call;  // the host's argument, opaque to the GPU
  uint64_t done;
};

// *counter += 1 (device memory, zeroed before the first signal); box->call = call;
// box->ticket = *counter. One signal in flight per mailbox: the stream's wait comes before its
// next signal.
void launch_signal_host(HostMailbox* box, uint64_t* counter, uint64_t call, cudaStream_t stream);
// Returns once box->done >= *counter: the host has run the call of the last signal and its writes
// before `done` are visible.
void launch_wait_for_host(const HostMailbox* box, const uint64_t* counter, cudaStream_t stream);

}  // namespace dsv4::cuda
