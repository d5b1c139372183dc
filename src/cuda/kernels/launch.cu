// pdl_enabled(): the DSV4_PDL switch of launch.cuh, read once per process; the shared-memory
// opt-in; the resident grid size.
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

static_assert(kMaxDevices <= 64, "ResidentGrid::raised is a 64-bit mask of devices");

void opt_in_shared_memory(const void* kernel, size_t bytes, std::atomic<uint64_t>& raised) {
  int dev = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&dev));
  DSV4_CHECK(dev >= 0 && dev < kMaxDevices);
  if (raised.load() & (uint64_t(1) << dev)) return;
  DSV4_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  raised.fetch_or(uint64_t(1) << dev);
}

int resident_blocks(ResidentGrid& record, const void* kernel, int threads, size_t smem) {
  int device = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&device));
  DSV4_CHECK(device >= 0 && device < kMaxDevices);
  if (const int known = record.blocks[size_t(device)].load(); known > 0) return known;
  if (smem > 0) opt_in_shared_memory(kernel, smem, record.raised);
  int sms = 0, per_sm = 0;
  DSV4_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  DSV4_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  DSV4_CHECK_MSG(per_sm >= 1, "no block of ", threads, " threads and ", smem, " bytes of shared memory fits on an SM");
  record.blocks[size_t(device)].store(sms * per_sm);
  return sms * per_sm;
}

}  // namespace dsv4::cuda
