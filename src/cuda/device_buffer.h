// DeviceBuffer<T>: one cudaMalloc'd array with RAII ownership and checked host transfers.
// Plain device memory only (no managed memory: device/README.md); layouts are the kernels' business.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "cuda/cuda_check.h"

namespace dsv4::cuda {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n_ > 0) DSV4_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), n_ * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);  // never throws from a destructor; a failure here is unrecoverable
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr_) cudaFree(ptr_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  T* get() { return ptr_; }
  const T* get() const { return ptr_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }

  void upload(const std::vector<T>& host) {
    DSV4_CHECK_MSG(host.size() == n_, "upload of ", host.size(), " elements into ", n_);
    if (n_ > 0) DSV4_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    if (n_ > 0) DSV4_CUDA_CHECK(cudaMemcpy(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost));
    return host;
  }
  // Byte-fill (e.g. 0xFF turns every float / bf16 into NaN: the poison that proves each output
  // element was written).
  void fill_bytes(int byte) {
    if (n_ > 0) DSV4_CUDA_CHECK(cudaMemset(ptr_, byte, bytes()));
  }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

// PinnedBuffer<T>: page-locked host memory, mapped into the device's address space (cudaHostAlloc
// with cudaHostAllocMapped): async copies to and from it run at bus speed, and kernels may read it
// in place (device()). The host tier's weights and hand-off buffers (host_experts.h).
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t n) : n_(n) {
    if (n_ == 0) return;
    DSV4_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&ptr_), n_ * sizeof(T), cudaHostAllocMapped));
    DSV4_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&device_), ptr_, 0));
  }
  ~PinnedBuffer() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), device_(std::exchange(o.device_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr_) cudaFreeHost(ptr_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      device_ = std::exchange(o.device_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  T* get() { return ptr_; }
  const T* get() const { return ptr_; }
  const T* device() const { return device_; }  // the same memory, as kernels address it
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }

 private:
  T* ptr_ = nullptr;
  T* device_ = nullptr;
  size_t n_ = 0;
};

}  // namespace dsv4::cuda
