// The FP8 KV cache row format and its packer (§12.1, §13): each 512-d K=V row is stored as 448
// E4M3 NoPE values with 7 UE8M0 scales (1×64 blocks) and 64 BF16 RoPE values, in FlashMLA's
// "MODEL1" paged layout. Attention over these rows is sparse_attention.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

constexpr int kKvDim = 512;                             // d (head_dim), K = V
constexpr int kKvRope = 64;                             // r, the trailing dims (BF16 in the cache)
constexpr int kKvNope = kKvDim - kKvRope;               // 448 E4M3 dims
constexpr int kKvTile = 64;                             // §12: 1×64 quantisation blocks
constexpr int kKvTiles = kKvNope / kKvTile;             // 7 scales per row
constexpr int kKvRowDataBytes = kKvNope + 2 * kKvRope;  // 576: [E4M3 NoPE | BF16 RoPE]
constexpr int kKvRowScaleBytes = kKvTiles + 1;          // 7 UE8M0 + 1 pad byte (written 0)

// Page of block_size rows (FlashMLA MODEL1): all rows' 576 data bytes first, then all rows' 8
// scale bytes, the page padded to a multiple of 576 bytes. Slot s lives in page s / block_size
// at offset s % block_size.
__host__ __device__ constexpr int64_t kv_page_bytes(int block_size) {
  const int64_t raw = int64_t(block_size) * (kKvRowDataBytes + kKvRowScaleBytes);
  return (raw + kKvRowDataBytes - 1) / kKvRowDataBytes * kKvRowDataBytes;
}

// Quantise and store rows: NoPE → E4M3 with scale 2^ceil(log2(max(amax,1e-4)/448)) per 64
// (the reference's KV fake-quant grid, §12), RoPE copied bit for bit.
struct KvPackParams {
  const __nv_bfloat16* kv = nullptr;  // [n_tokens, 512] bf16 after kv_norm and RoPE
  const int32_t* slot = nullptr;      // [n_tokens] destination slot; < 0: not stored
  uint8_t* cache = nullptr;           // [n_pages, kv_page_bytes(block_size)]
  int n_tokens = 0, block_size = 0;
};

void launch_kv_pack(const KvPackParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
