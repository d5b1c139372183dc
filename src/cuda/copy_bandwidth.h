// The device's measured copy bandwidth, the denominator of every roofline share a benchmark
// prints (design.md "Speed principles": ratios measured in the same run).
#pragma once

#include <string>

namespace dsv4::cuda {

struct CopyBandwidth {
  std::string device;     // e.g. "NVIDIA H200"
  double bytes_per_s = 0; // (read + write) bytes per second of a large device-to-device copy
};

// Best of several cudaMemcpy D2D of `bytes` (default 1 GiB) on `device`.
CopyBandwidth measure_copy_bandwidth(int device, size_t bytes = size_t(1) << 30);

// The bus's rate into `device`: bytes per second of the best of several copies of `bytes` from
// pinned host memory, the denominator for work that reads host memory from the GPU (the host
// tier's experts, host_experts.h).
double measure_bus_bandwidth(int device, size_t bytes = size_t(256) << 20);

}  // namespace dsv4::cuda
