// pdl_enabled(): the DSV4_PDL switch of launch.cuh, read once per process; the shared-memory opt-in.
#include "cuda/kernels/launch.cuh"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "util/error.h"

namespace dsv4::cuda {

bool pdl_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("DSV4_PDL");
    if (!v || std::strcmp(v, "1") == 0) return true;
    DSV4_CHECK_MSG(std::strcmp(v, "0") == 0, "DSV4_PDL=", v, ": expected 0 or 1");
    return false;
  }();
  return enabled;
}

void opt_in_shared_memory(const void* kernel, size_t bytes, std::atomic<uint64_t>& raised) {
  int dev = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&dev));
  DSV4_CHECK(dev >= 0 && dev < 64);
  if (raised.load() & (uint64_t(1) << dev)) return;
  DSV4_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  raised.fetch_or(uint64_t(1) << dev);
}

}  // namespace dsv4::cuda
