// How fast a kernel reads pinned, mapped host memory over the bus, by how many contiguous bytes
// each row's read covers, against cudaMemcpyAsync host -> device (the host tier's design choice:
// kernels/host_gather.cuh). The buffer is rows of `pitch` bytes; every warp load covers 512 bytes
// as 512/seg segments of `seg` contiguous bytes, each in its own row (the grouped decode GEMM reads
// 8 rows × 64 bytes per warp load), and successive loads walk along the rows. Every byte is read
// once; the loads bypass L1 as the GEMM's weight loads do. A platform measurement: it runs no
// dsv4 kernel. Results: bench/results/2026-12-06-h100-host-tier-bus.md.
//
// Usage (GPU host): build-gpu/bench_cuda_bus_read_bench
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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
  return 0;
}
