// The device's ceilings, measured: the denominators of the shares a benchmark prints (design.md
// "Speed principles": ratios measured in the same run) — the copy bandwidth (rooflines of
// memory-bound work), the bus's rate from host memory, the dense FP8 GEMM peak (prefill).
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

// FLOP/s of cuBLASLt's plain GEMM at n³ on `device` (TN, FP32 accumulation, BF16 out, one
// tensor-wide scale): E4M3 inputs with `fp8` (issue 13's "FP8 GEMM at 8192³", which torch's
// _scaled_mm runs at 1,309 TFLOP/s on an H200), else BF16. Random inputs (zeros would draw less
// power and clock higher); the best of several runs after a warm-up. Throws if cuBLASLt has no
// algorithm for it.
double measure_gemm_peak(int device, bool fp8, int n = 8192);

}  // namespace dsv4::cuda
