// KV row packer kernel and launcher; see kv_cache.cuh for the format.
// One warp per row, templated on the head dim D: for each of the (D−64)/64 NoPE tiles, lane l
// quantises elements 2l, 2l+1; then lane l copies RoPE pair l.
#include "cuda/kernels/kv_cache.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 128;  // 4 rows per block
static_assert(kKvTile == 2 * kWarpSize, "one warp covers one 64-wide tile, two values per lane");
static_assert(kKvRope == 2 * kWarpSize, "one warp copies the 64 RoPE values, two per lane");

template <int D>
__global__ void __launch_bounds__(kThreads) kv_pack_kernel(KvPackParams p) {
  wait_for_prior_grids();
  constexpr int kNope = kv_nope(D), kTiles = kv_tiles(D);
  constexpr int kDataBytes = kv_row_data_bytes(D), kScaleBytes = kv_row_scale_bytes(D);
  const int t = blockIdx.x * (kThreads / kWarpSize) + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (t >= p.n_tokens) return;
  const int slot = p.slot[t];
  if (slot < 0) return;
  const int64_t page = slot / p.block_size, off = slot % p.block_size;
  uint8_t* page_base = p.cache + page * kv_page_bytes(p.block_size, D);
  uint8_t* data = page_base + off * kDataBytes;
  uint8_t* scales = page_base + int64_t(p.block_size) * kDataBytes + off * kScaleBytes;
  const __nv_bfloat162* row = reinterpret_cast<const __nv_bfloat162*>(p.kv + int64_t(t) * D);
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile) {
    const float2 v = __bfloat1622float2(row[tile * kKvTile / 2 + lane]);
    const float amax = warp_max(fmaxf(fabsf(v.x), fabsf(v.y)));
    const uint8_t sb = act_scale_byte(amax);  // same 1e-4 floor and 448 as activations (§12)
    const float inv = inv_e8m0(sb);
    const uint16_t q = uint16_t(float_to_e4m3(v.x * inv)) | uint16_t(float_to_e4m3(v.y * inv)) << 8;
    reinterpret_cast<uint16_t*>(data + tile * kKvTile)[lane] = q;
    if (lane == 0) scales[tile] = sb;
  }
  reinterpret_cast<__nv_bfloat162*>(data + kNope)[lane] = row[kNope / 2 + lane];
  if (lane == 0) scales[kTiles] = 0;  // pad byte: defined, so rows compare bitwise
}

}  // namespace

void launch_kv_pack(const KvPackParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.kv && p.slot && p.cache && p.n_tokens >= 0 && p.block_size > 0);
  DSV4_CHECK_MSG(kv_dim_supported(p.dim), "kv_pack: dim=", p.dim, " (supported: ", kKvDimNano, ", ", kKvDimV4, ")");
  if (p.n_tokens == 0) return;
  const int per_block = kThreads / kWarpSize;
  const dim3 grid((p.n_tokens + per_block - 1) / per_block);
  if (p.dim == kKvDimV4)
    launch_kernel(kv_pack_kernel<kKvDimV4>, grid, kThreads, 0, stream, p);
  else
    launch_kernel(kv_pack_kernel<kKvDimNano>, grid, kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
