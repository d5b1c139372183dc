// measure_copy_bandwidth and measure_bus_bandwidth (copy_bandwidth.h): timed with CUDA events,
// one warm-up copy first.
#include "cuda/copy_bandwidth.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"

namespace dsv4::cuda {

namespace {

// Best time in seconds of five runs of `copy` on the current device's null stream, after one
// warm-up run, timed with CUDA events.
template <typename F>
double best_seconds(F&& copy) {
  cudaEvent_t start = nullptr, stop = nullptr;
  DSV4_CUDA_CHECK(cudaEventCreate(&start));
  DSV4_CUDA_CHECK(cudaEventCreate(&stop));
  copy();
  float best_ms = 1e30f;
  for (int i = 0; i < 5; ++i) {
    DSV4_CUDA_CHECK(cudaEventRecord(start));
    copy();
    DSV4_CUDA_CHECK(cudaEventRecord(stop));
    DSV4_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    best_ms = std::min(best_ms, ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return double(best_ms) * 1e-3;
}

}  // namespace

CopyBandwidth measure_copy_bandwidth(int device, size_t bytes) {
  DSV4_CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceBuffer<uint8_t> a(bytes), b(bytes);
  const double s = best_seconds(
      [&] { DSV4_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice)); });
  return {prop.name, 2.0 * double(bytes) / s};
}

double measure_bus_bandwidth(int device, size_t bytes) {
  DSV4_CUDA_CHECK(cudaSetDevice(device));
  PinnedBuffer<uint8_t> host(bytes);
  std::memset(host.get(), 1, bytes);
  DeviceBuffer<uint8_t> dev(bytes);
  const double s = best_seconds(
      [&] { DSV4_CUDA_CHECK(cudaMemcpyAsync(dev.get(), host.get(), bytes, cudaMemcpyHostToDevice)); });
  return double(bytes) / s;
}

}  // namespace dsv4::cuda
