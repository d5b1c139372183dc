// measure_copy_bandwidth (copy_bandwidth.h): timed with CUDA events, one warm-up copy first.
#include "cuda/copy_bandwidth.h"

#include <algorithm>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"

namespace dsv4::cuda {

CopyBandwidth measure_copy_bandwidth(int device, size_t bytes) {
  DSV4_CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceBuffer<uint8_t> a(bytes), b(bytes);
  cudaEvent_t start = nullptr, stop = nullptr;
  DSV4_CUDA_CHECK(cudaEventCreate(&start));
  DSV4_CUDA_CHECK(cudaEventCreate(&stop));
  DSV4_CUDA_CHECK(cudaMemcpy(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice));
  float best_ms = 1e30f;
  for (int i = 0; i < 5; ++i) {
    DSV4_CUDA_CHECK(cudaEventRecord(start));
    DSV4_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice));
    DSV4_CUDA_CHECK(cudaEventRecord(stop));
    DSV4_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    best_ms = std::min(best_ms, ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return {prop.name, 2.0 * double(bytes) / (double(best_ms) * 1e-3)};
}

}  // namespace dsv4::cuda
