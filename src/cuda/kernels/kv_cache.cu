// KV row packer kernel and launcher; see kv_cache.cuh for the format.
// One warp per row: for each of the 7 NoPE tiles, lane l quantises elements 2l, 2l+1.
#include "cuda/kernels/kv_cache.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 128;  // 4 rows per block
static_assert(kKvTile == 2 * kWarpSize, "one warp covers one 64-wide tile, two values per lane");
static_assert(kKvRope == 2 * kWarpSize, "one warp copies the 64 RoPE values, two per lane");

__global__ void __launch_bounds__(kThreads) kv_pack_kernel(KvPackParams p) {
  const int t = blockIdx.x * (kThreads / kWarpSize) + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (t >= p.n_tokens) return;
  const int slot = p.slot[t];
  if (slot < 0) return;
  const int64_t page = slot / p.block_size, off = slot % p.block_size;
  uint8_t* page_base = p.cache + page * kv_page_bytes(p.block_size);
  uint8_t* data = page_base + off * kKvRowDataBytes;
  uint8_t* scales = page_base + int64_t(p.block_size) * kKvRowDataBytes + off * kKvRowScaleBytes;
  const __nv_bfloat162* row = reinterpret_cast<const __nv_bfloat162*>(p.kv + int64_t(t) * kKvDim);
#pragma unroll
  for (int tile = 0; tile < kKvTiles; ++tile) {
    const float2 v = __bfloat1622float2(row[tile * kKvTile / 2 + lane]);
    const float amax = warp_max(fmaxf(fabsf(v.x), fabsf(v.y)));
    const uint8_t sb = act_scale_byte(amax);  // same 1e-4 floor and 448 as activations (§12)
    const float inv = inv_e8m0(sb);
    const uint16_t q = uint16_t(float_to_e4m3(v.x * inv)) | uint16_t(float_to_e4m3(v.y * inv)) << 8;
    reinterpret_cast<uint16_t*>(data + tile * kKvTile)[lane] = q;
    if (lane == 0) scales[tile] = sb;
  }
  reinterpret_cast<__nv_bfloat162*>(data + kKvNope)[lane] = row[kKvNope / 2 + lane];
  if (lane == 0) scales[kKvTiles] = 0;  // pad byte: defined, so rows compare bitwise
}

}  // namespace

void launch_kv_pack(const KvPackParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.kv && p.slot && p.cache && p.n_tokens >= 0 && p.block_size > 0);
  if (p.n_tokens == 0) return;
  const int per_block = kThreads / kWarpSize;
  kv_pack_kernel<<<(p.n_tokens + per_block - 1) / per_block, kThreads, 0, stream>>>(p);
  DSV4_CUDA_CHECK_LAUNCH();
}

}  // namespace dsv4::cuda
