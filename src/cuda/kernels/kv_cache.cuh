// The FP8 KV cache row format and its packer (§12.1, §13): each d-dim K=V row (d = head_dim, 512
// in V4, 128 in the nano/test models) is stored as d−64 E4M3 NoPE values with one UE8M0 scale per
// 1×64 block and 64 BF16 RoPE values, in FlashMLA's "MODEL1" paged layout (d = 512: byte for byte;
// d = 128: the same layout at the smaller width). Attention over these rows is sparse_attention.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

constexpr int kKvDimV4 = 512;    // head_dim of V4 Flash/Pro (§4.2)
constexpr int kKvDimNano = 128;  // head_dim of the nano model and the tiny fixtures (§15.1)
constexpr int kKvRope = 64;      // r, the trailing dims (BF16 in the cache, §4.4)
constexpr int kKvTile = 64;      // §12: 1×64 quantisation blocks of the NoPE dims

// The kernels are instantiated for these head dims only (launchers check it).
__host__ __device__ constexpr bool kv_dim_supported(int dim) { return dim == kKvDimV4 || dim == kKvDimNano; }
__host__ __device__ constexpr int kv_nope(int dim) { return dim - kKvRope; }           // 448 / 64 E4M3 dims
__host__ __device__ constexpr int kv_tiles(int dim) { return kv_nope(dim) / kKvTile; }  // 7 / 1 scales
// [E4M3 NoPE | BF16 RoPE]: 576 / 192 bytes (both multiples of 16, so rows stay 16-byte aligned).
__host__ __device__ constexpr int kv_row_data_bytes(int dim) { return kv_nope(dim) + 2 * kKvRope; }
// The UE8M0 scales plus one pad byte (written 0): 8 / 2 bytes.
__host__ __device__ constexpr int kv_row_scale_bytes(int dim) { return kv_tiles(dim) + 1; }

// Page of block_size rows (FlashMLA MODEL1): all rows' data bytes first, then all rows' scale
// bytes, the page padded to a multiple of the row data bytes. Slot s lives in page s / block_size
// at offset s % block_size.
__host__ __device__ constexpr int64_t kv_page_bytes(int block_size, int dim) {
  const int64_t raw = int64_t(block_size) * (kv_row_data_bytes(dim) + kv_row_scale_bytes(dim));
  return (raw + kv_row_data_bytes(dim) - 1) / kv_row_data_bytes(dim) * kv_row_data_bytes(dim);
}

// Quantise and store rows: NoPE → E4M3 with scale 2^ceil(log2(max(amax,1e-4)/448)) per 64
// (the reference's KV fake-quant grid, §12), RoPE copied bit for bit.
struct KvPackParams {
  const __nv_bfloat16* kv = nullptr;  // [n_tokens, dim] bf16 after kv_norm and RoPE
  const int32_t* slot = nullptr;      // [n_tokens] destination slot; < 0: not stored
  uint8_t* cache = nullptr;           // [n_pages, kv_page_bytes(block_size, dim)]
  int n_tokens = 0, block_size = 0;
  int dim = 0;                        // head_dim: kKvDimV4 or kKvDimNano
};

void launch_kv_pack(const KvPackParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
