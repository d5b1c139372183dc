// Checked CUDA calls: every runtime call and every kernel launch goes through DSV4_CUDA_CHECK /
// DSV4_CUDA_CHECK_LAUNCH, which throw dsv4::InternalError naming file:line. Memory ownership is
// device_buffer.h's; what the kernels compute is kernels/*.cuh's.
#pragma once

#include <cuda_runtime_api.h>

#include "util/error.h"

// A failing CUDA call is a bug or a broken device, never bad user input: InternalError.
#define DSV4_CUDA_CHECK(call)                                                                  \
  do {                                                                                         \
    const cudaError_t dsv4_cuda_err_ = (call);                                                 \
    if (dsv4_cuda_err_ != cudaSuccess)                                                         \
      throw ::dsv4::InternalError(::dsv4::cat(__FILE__, ":", __LINE__, ": ", #call, " -> ",    \
                                              cudaGetErrorName(dsv4_cuda_err_), ": ",          \
                                              cudaGetErrorString(dsv4_cuda_err_)));            \
  } while (0)

// After a <<<>>> launch: catches bad configurations at once (asynchronous faults surface at the
// next synchronising call, which is checked too).
#define DSV4_CUDA_CHECK_LAUNCH() DSV4_CUDA_CHECK(cudaGetLastError())

namespace dsv4::cuda {

// True when a CUDA device can be used; tests skip (never fail) on hosts without one.
inline bool device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error for later calls
    return false;
  }
  return n > 0;
}

}  // namespace dsv4::cuda
