// DeviceArena: step buffers carved from one cudaMalloc, and the byte count of that carving from
// the very same code (design.md "Runtime": one size table that both allocation and the fit check
// read). A buffer set is a constructor that takes `DeviceArena&`; run it against a counting arena
// to learn its size, against a real one to allocate.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/cuda_check.h"

namespace dsv4::cuda {

class DeviceArena {
 public:
  static constexpr size_t kAlign = 256;  // cudaMalloc's own alignment: every carve starts aligned

  DeviceArena() = default;  // counting: take() returns nullptr and only adds up sizes
  explicit DeviceArena(size_t bytes) : capacity_(bytes) {
    if (bytes > 0) DSV4_CUDA_CHECK(cudaMalloc(&base_, bytes));
  }
  ~DeviceArena() {
    if (base_) cudaFree(base_);
  }
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;

  // n elements of T (n may be 0: a valid, distinct, aligned address in a real arena).
  template <typename T>
  T* take(size_t n) {
    const size_t at = used_;
    used_ += (n * sizeof(T) + kAlign - 1) / kAlign * kAlign + (n == 0 ? kAlign : 0);
    if (!base_) return nullptr;
    DSV4_CHECK_MSG(used_ <= capacity_, "device arena: ", used_, " bytes carved from ", capacity_);
    return reinterpret_cast<T*>(static_cast<char*>(base_) + at);
  }
  bool counting() const { return base_ == nullptr; }
  size_t used() const { return used_; }

 private:
  void* base_ = nullptr;
  size_t capacity_ = 0, used_ = 0;
};

}  // namespace dsv4::cuda
