// What the GPU benchmarks (bench/cuda_*.cpp) share: non-trivial input bytes, event timing of
// CUDA-graph replays (median of repetitions), the card/date header, and the two ceilings measured
// in the same run: the device-to-device copy and cuBLASLt's dense GEMM peak (src/cuda/ceilings.h).
// Each benchmark owns its shapes and its table.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cuda/ceilings.h"
#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"

namespace dsv4::cuda::bench {

// The arguments the kernel benchmarks share: --quick (fewer repetitions and sizes) and --only
// SUBSTRING (only the shapes whose name contains it: one kernel's launches, for a profiler's
// --launch-skip). nullopt, after a usage line on stderr, for anything else.
struct BenchArgs {
  bool quick = false;
  std::string only;
  bool wants(const char* shape_name) const { return only.empty() || std::string(shape_name).find(only) != std::string::npos; }
};
inline std::optional<BenchArgs> parse_bench_args(int argc, char** argv, const char* program) {
  BenchArgs a;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      a.quick = true;
    } else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      a.only = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--only SUBSTRING]\n", program);
      return std::nullopt;
    }
  }
  return a;
}

// Fast deterministic filler (xorshift64*): benchmark inputs only need to be non-trivial bytes,
// never zeros (zeros can run faster than real data, METHOD.md).
struct Filler {
  uint64_t s = 0x9E3779B97F4A7C15ull;
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  std::vector<uint8_t> bytes(size_t n, uint8_t lo, uint8_t hi, bool avoid_e4m3_nan) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) {
      uint8_t b = uint8_t(lo + next() % uint64_t(hi - lo + 1));
      if (avoid_e4m3_nan && (b & 0x7f) == 0x7f) b ^= 0x01;
      v[i] = b;
    }
    return v;
  }
  // BF16 values of magnitude ~[1, 2) × 2^±3 with random signs (no NaN/inf).
  std::vector<uint16_t> bf16(size_t n) {
    std::vector<uint16_t> v(n);
    for (auto& x : v) x = uint16_t(0x3c00 | (next() & 0x83ff));
    return v;
  }
};

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    DSV4_CUDA_CHECK(cudaEventCreate(&a));
    DSV4_CUDA_CHECK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  // Median over reps of (time of `iters` calls) / iters, in seconds; one warm-up rep first.
  // Kernels are captured once into a CUDA graph and replayed, as the decode step runs, so host
  // launch overhead stays out of their times. The copy roofline is timed from plain stream
  // launches: captured into a graph it measured 2.4 TB/s on an H100 (while a BF16 GEMV in the
  // same run streamed 3.1 TB/s), where the plain stream copy measured 3.0 TB/s
  // (bench/results/2026-11-25-h100-gemv.md). body(i, stream) is called once eagerly before the
  // capture, so one-time host work (library plans) stays out of the graph.
  double median(int reps, int iters, bool graph_replay, const std::function<void(int, cudaStream_t)>& body) {
    cudaStream_t s;
    DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    body(0, s);
    DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    if (graph_replay) {
      DSV4_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      for (int i = 0; i < iters; ++i) body(i, s);
      DSV4_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
      DSV4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    }
    std::vector<double> t;
    for (int r = -1; r < reps; ++r) {
      DSV4_CUDA_CHECK(cudaEventRecord(a, s));
      if (graph_replay) {
        DSV4_CUDA_CHECK(cudaGraphLaunch(exec, s));
      } else {
        for (int i = 0; i < iters; ++i) body(i, s);
      }
      DSV4_CUDA_CHECK(cudaEventRecord(b, s));
      DSV4_CUDA_CHECK(cudaEventSynchronize(b));
      float ms = 0;
      DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      if (r >= 0) t.push_back(ms * 1e-3 / iters);
    }
    if (graph_replay) {
      DSV4_CUDA_CHECK(cudaGraphExecDestroy(exec));
      DSV4_CUDA_CHECK(cudaGraphDestroy(graph));
    }
    DSV4_CUDA_CHECK(cudaStreamDestroy(s));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

// Copies of the weights so that rotating through them defeats the L2 (each launch reads from DRAM).
inline int n_copies_for(size_t bytes, size_t l2_bytes) {
  return int(std::clamp<size_t>((4 * l2_bytes + bytes - 1) / bytes, 1, 64));
}

// `copies` back-to-back copies of `bytes` host bytes in one device buffer (copy i at i·bytes), the
// buffer never empty so its pointer is never null (a zero-size scale array of a BF16 shape).
inline DeviceBuffer<uint8_t> replicated(const void* host, size_t bytes, int copies) {
  DeviceBuffer<uint8_t> d(std::max<size_t>(bytes * size_t(copies), 1));
  for (int i = 0; i < copies && bytes > 0; ++i)
    DSV4_CUDA_CHECK(cudaMemcpy(d.get() + size_t(i) * bytes, host, bytes, cudaMemcpyHostToDevice));
  return d;
}

// Prints the card and date; returns the device properties.
inline cudaDeviceProp print_card() {
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  char date[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  std::printf("card: %s, %d SMs, L2 %d MiB, %.1f GiB; date: %s\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20, double(prop.totalGlobalMem) / (1 << 30), date);
  return prop;
}

// Device-to-device copy of 1 GiB, bytes read + bytes written, in GB/s.
inline double copy_gbps(Timer& timer, int reps) {
  const size_t copy_bytes = size_t(1) << 30;
  DeviceBuffer<uint8_t> c0(copy_bytes), c1(copy_bytes);
  c0.fill_bytes(0x5a);
  const double t = timer.median(reps, 5, false, [&](int, cudaStream_t st) {
    DSV4_CUDA_CHECK(cudaMemcpyAsync(c1.get(), c0.get(), copy_bytes, cudaMemcpyDeviceToDevice, st));
  });
  return 2.0 * copy_bytes / t * 1e-9;
}

// The dense peak reference (ceilings.h): cuBLASLt's plain GEMM at n³, FP8 E4M3 or BF16 inputs, on
// the current device. TFLOP/s.
inline double lt_peak_tflops(bool fp8, int n) {
  int device = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&device));
  return measure_gemm_peak(device, fp8, n) * 1e-12;
}

}  // namespace dsv4::cuda::bench
