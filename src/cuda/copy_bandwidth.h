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

}  // namespace dsv4::cuda
