// How fast a kernel reads pinned, mapped host memory over the bus, by how many contiguous bytes
// each row's read covers, against cudaMemcpyAsync host -> device (the host tier's design choice:
// kernels/host_gather.cuh). The buffer is rows of `pitch` bytes; every warp load covers 512 bytes
// as 512/seg segments of `seg` contiguous bytes, each in its own row (the grouped decode GEMM reads
// 8 rows × 64 bytes per warp load), and successive loads walk along the rows. Every byte is read
// once; the loads bypass L1 as the GEMM's weight loads do. Then the copy and the 512-byte read
// again while N host threads stream through another 4 GiB of host memory, with the threads' own
// rate over the same time and alone: whether host memory feeds the bus and the cores at once
// (the premise of splitting a host expert's work between the GPU reading it over the bus and
// the host's cores computing on it). A platform measurement: it runs no dsv4 kernel. Results:
// bench/results/2026-12-06-h100-host-tier-bus.md, 2026-12-06-h100-host-tier-paths.md.
//
// Usage (GPU host): build-gpu/bench_cuda_bus_read_bench
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
  std::exit(1);
}
#define CK(x) check((x), #x)

__global__ void read_rows(const uint4* __restrict__ src, size_t bytes, int seg, int pitch, unsigned long long* sink) {
  const int lane = threadIdx.x % 32;
  const int lanes_per_seg = seg / 16, segs = 32 / lanes_per_seg;
  const size_t warps = size_t(gridDim.x) * blockDim.x / 32;
  const size_t warp = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  // A tile is `segs` rows of `pitch` bytes; a warp walks a tile's columns `seg` bytes at a time.
  const size_t tile_bytes = size_t(segs) * pitch, tiles = bytes / tile_bytes, steps = pitch / seg;
  uint32_t acc = 0;
  for (size_t t = warp; t < tiles; t += warps) {
    const char* base = reinterpret_cast<const char*>(src) + t * tile_bytes + size_t(lane / lanes_per_seg) * pitch +
                       (lane % lanes_per_seg) * 16;
#pragma unroll 8
    for (size_t s = 0; s < steps; ++s) {
      uint4 v;
      asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                   : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                   : "l"(base + s * seg));
      acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
  }
  if (acc == 0x12345678u) atomicAdd(sink, 1ull);  // keeps the loads live
}

// `threads` host threads reading `buf` (each its own slice, over and over) until stopped; rate()
// is their GB/s from start() to the call.
class HostReaders {
 public:
  HostReaders(const std::vector<uint64_t>& buf, int threads) : buf_(buf), threads_(threads) {}
  void start() {
    stop_ = false;
    bytes_ = 0;
    t0_ = std::chrono::steady_clock::now();
    for (int t = 0; t < threads_; ++t) pool_.emplace_back([this, t] { read(t); });
  }
  double rate() const {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    return double(bytes_.load()) / s / 1e9;
  }
  void stop() {
    stop_ = true;
    for (std::thread& t : pool_) t.join();
    pool_.clear();
  }

 private:
  void read(int t) {
    const size_t n = buf_.size() / size_t(threads_), chunk = size_t(1) << 17;  // 1 MiB per count
    const uint64_t* p = buf_.data() + size_t(t) * n;
    uint64_t acc = 0;
    while (!stop_.load(std::memory_order_relaxed))
      for (size_t i = 0; i + chunk <= n && !stop_.load(std::memory_order_relaxed); i += chunk) {
        for (size_t j = 0; j < chunk; ++j) acc += p[i + j];
        bytes_ += chunk * sizeof(uint64_t);
      }
    if (acc == 0x12345678u) std::printf(" ");  // keeps the loads live
  }
  const std::vector<uint64_t>& buf_;
  int threads_;
  std::vector<std::thread> pool_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> bytes_{0};
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace

int main() {
  const size_t bytes = size_t(1) << 30;
  void* host = nullptr;
  CK(cudaHostAlloc(&host, bytes, cudaHostAllocMapped));
  uint64_t s = 88172645463325252ull;  // xorshift64: non-trivial bytes
  for (size_t i = 0; i < bytes / 8; ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    static_cast<uint64_t*>(host)[i] = s;
  }
  void* mapped = nullptr;
  CK(cudaHostGetDevicePointer(&mapped, host, 0));
  void* dev = nullptr;
  CK(cudaMalloc(&dev, bytes));
  unsigned long long* sink = nullptr;
  CK(cudaMalloc(&sink, sizeof(*sink)));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  // GB/s of the median of 5 timed runs, after one warm-up.
  const auto rate = [&](auto&& body) {
    body();
    CK(cudaDeviceSynchronize());
    std::vector<float> ms;
    for (int r = 0; r < 5; ++r) {
      CK(cudaEventRecord(a));
      body();
      CK(cudaEventRecord(b));
      CK(cudaEventSynchronize(b));
      float t = 0;
      CK(cudaEventElapsedTime(&t, a, b));
      ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    return double(bytes) / (ms[2] * 1e-3) / 1e9;
  };
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs, 1 GiB pinned mapped host buffer\n", prop.name, sms);
  std::printf("cudaMemcpyAsync host->device: %.1f GB/s\n",
              rate([&] { CK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice)); }));
  for (int pitch : {2048, 1024})
    for (int seg : {64, 128, 256, 512})
      for (int blocks_per_sm : {1, 4})
        std::printf("kernel read, pitch %4d, %3d contiguous bytes per row and load, %d x %d blocks of 256: %.1f GB/s\n",
                    pitch, seg, sms, blocks_per_sm, rate([&] {
                      read_rows<<<sms * blocks_per_sm, 256>>>(static_cast<const uint4*>(mapped), bytes, seg, pitch, sink);
                    }));
  CK(cudaGetLastError());

  // The same copy and the 512-byte kernel read while the host's cores read other memory.
  std::vector<uint64_t> other((size_t(4) << 30) / sizeof(uint64_t));
  for (size_t i = 0; i < other.size(); ++i) other[i] = i * 0x9e3779b97f4a7c15ull;
  const int hw = int(std::thread::hardware_concurrency());
  for (int threads : {hw / 2, hw}) {
    HostReaders readers(other, threads);
    readers.start();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const double alone = readers.rate();
    readers.stop();
    readers.start();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    double copy = 0, kernel = 0;
    for (int r = 0; r < 3; ++r) {  // ~1 s of bus traffic under the readers
      copy += rate([&] { CK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice)); }) / 3;
      kernel += rate([&] {
        read_rows<<<sms * 4, 256>>>(static_cast<const uint4*>(mapped), bytes, 512, 2048, sink);
      }) / 3;
    }
    const double beside = readers.rate();
    readers.stop();
    std::printf("%2d host threads reading host memory: alone %.1f GB/s; beside the bus %.1f GB/s, while "
                "cudaMemcpyAsync %.1f GB/s and the 512-byte kernel read %.1f GB/s\n",
                threads, alone, beside, copy, kernel);
  }
  CK(cudaGetLastError());
  return 0;
}
