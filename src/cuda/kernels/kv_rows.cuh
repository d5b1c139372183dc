// Device-side reading of the FP8 KV cache (kv_cache.cuh's row format and page layout): where a
// slot's data and scale bytes live, and four of its dims as exact BF16. Shared by the attention
// kernel that reads the cache directly (sparse_attention.cu) and the gather that expands a chunk's
// rows to BF16 once for the prefill kernel (kv_gather.cu), so both see the same values.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/kv_cache.cuh"

namespace dsv4::cuda {

// Slot s: page s / block_size, offset s % block_size; the page's data bytes first, then its scale
// bytes. page_bytes = kv_page_bytes(block_size, D), computed once per block (a 64-bit divide).
template <int D>
__device__ __forceinline__ const uint8_t* kv_row_data(const uint8_t* cache, int block_size, int64_t page_bytes,
                                                      int slot) {
  const int page = slot / block_size, off = slot % block_size;
  return cache + page * page_bytes + off * kv_row_data_bytes(D);
}
template <int D>
__device__ __forceinline__ const uint8_t* kv_row_scales(const uint8_t* cache, int block_size, int64_t page_bytes,
                                                        int slot) {
  const int page = slot / block_size, off = slot % block_size;
  return cache + page * page_bytes + int64_t(block_size) * kv_row_data_bytes(D) + off * kv_row_scale_bytes(D);
}

// Dims d … d+3 (d % 4 == 0) of a row as four BF16 (two words, low dim first), from its data and
// scale bytes. NoPE: E4M3 · 2^(scale − 127), exact in BF16 (the scale is a power of two and E4M3
// has 4 significant bits; the §12 scale floor keeps the product normal). RoPE: the stored BF16.
template <int D>
__device__ __forceinline__ uint2 kv_dims_bf16(const uint8_t* data, const uint8_t* scales, int d) {
  constexpr int kNope = kv_nope(D);
  static_assert(kNope % 4 == 0 && kKvTile % 4 == 0, "4 dims are all NoPE or all RoPE and share one scale");
  if (d < kNope) {
    const uint32_t w = *reinterpret_cast<const uint32_t*>(data + d);
    const float sc = e8m0_to_float_select(scales[d / kKvTile]);
    const float2 a = e4m3x2_to_float2(uint16_t(w)), b = e4m3x2_to_float2(uint16_t(w >> 16));
    return make_uint2(bf16x2_bits(a.x * sc, a.y * sc), bf16x2_bits(b.x * sc, b.y * sc));
  }
  return *reinterpret_cast<const uint2*>(data + kNope + 2 * (d - kNope));
}

}  // namespace dsv4::cuda
