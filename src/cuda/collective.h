// The communication layer of expert parallelism: an all-reduce over one model replica's ranks, through
// NCCL or on one GPU (collective.cpp). What is summed and when is the layer pass's business.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "cuda/kernels/loopback_reduce.cuh"  // kMaxLoopbackRanks

namespace dsv4::cuda {

// The ranks of one model replica summing buffers together: R GPUs of one host driven by one
// process through NCCL, or R virtual ranks on one GPU (loopback: tests, and the cost of the layer
// on one card).
class Collective {
 public:
  virtual ~Collective() = default;
  virtual int ranks() const = 0;
  virtual std::string name() const = 0;  // "nccl" / "loopback"
  // In place: afterwards every rank's bufs[r][0, count) holds the element-wise sum over ranks of the
  // inputs. Enqueued on streams[r] (bufs and streams have ranks() entries); no host sync, no
  // allocation, capturable into a CUDA graph with cudaStreamCaptureModeGlobal (that is how
  // cuda_forward.cpp captures).
  virtual void all_reduce_sum(std::span<__nv_bfloat16* const> bufs, size_t count,
                              std::span<const cudaStream_t> streams) = 0;
  // The same over FP32 buffers (the attention partials of tensor parallelism).
  virtual void all_reduce_sum(std::span<float* const> bufs, size_t count,
                              std::span<const cudaStream_t> streams) = 0;
};

// R virtual ranks whose buffers all live on the current device and whose streams are one stream:
// one kernel reads the R inputs and writes the sum to all R (FP32 accumulation in rank order
// 0..R-1, one rounding to BF16 for BF16 buffers). 1 <= R <= kMaxLoopbackRanks (8). Errors
// (dsv4::fail) for different streams.
std::unique_ptr<Collective> make_loopback_collective(int ranks);

// One NCCL communicator per device of `devices` (ncclCommInitAll, one process); all_reduce_sum runs
// ncclAllReduce(ncclBfloat16 or ncclFloat32, ncclSum) per rank inside ncclGroupStart/End: bufs[r]
// and streams[r] on devices[r]. NCCL adds pairs in the buffer's type in an order of its own, so its
// BF16 sums of three or more ranks may differ from the loopback's by BF16 roundings. Sets NCCL_NVLS_ENABLE=0
// in the environment (setenv without overwrite) before creating comms (NVLink multicast must stay
// off). Errors name the NCCL error string (ncclGetErrorString) and the call.
std::unique_ptr<Collective> make_nccl_collective(std::span<const int> devices);

}  // namespace dsv4::cuda
