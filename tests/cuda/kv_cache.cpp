// Parity of kernels/kv_cache.cu: every packed byte of the FlashMLA MODEL1 page against a host
// packing built from util/float_formats.h, and the dequantised NoPE values against the quant
// module's 1×64 KV fake-quant (fp8_roundtrip_blocks, §12).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cuda/kernels/kv_cache.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

// The MODEL1 sizes (§13: 584 bytes per row = 448 E4M3 + 128 BF16 + 8 scale bytes; pages padded
// to 576-byte multiples). Host-only: runs without a GPU.
TEST(KvLayout, Model1Sizes) {
  EXPECT_EQ(kKvRowDataBytes + kKvRowScaleBytes, 584);
  EXPECT_EQ(kv_page_bytes(64), 65 * 576);  // 64·584 = 37376 → 37440
  EXPECT_EQ(kv_page_bytes(1), 2 * 576);
  EXPECT_EQ(kv_page_bytes(72), 73 * 576);  // 72·584 = 42048 = 73·576 exactly
}

struct KvCase {
  int n_tokens, block_size, n_pages;
};

class KvPackTest : public CudaOpTest, public ::testing::WithParamInterface<KvCase> {};

TEST_P(KvPackTest, BytesMatchHostPacking) {
  const auto c = GetParam();
  const int n_slots = c.block_size * c.n_pages;
  ASSERT_LE(c.n_tokens, n_slots);
  // Rows with per-row magnitudes from 2^-8 to 2^8 (tiles near the 1e-4 floor included).
  std::vector<float> kv(size_t(c.n_tokens) * kKvDim);
  for (int t = 0; t < c.n_tokens; ++t) {
    const float mag = std::ldexp(1.0f, uniform_int(-8, 8));
    for (int i = 0; i < kKvDim; ++i) kv[size_t(t) * kKvDim + i] = normal(mag);
  }
  if (c.n_tokens > 1)
    for (int i = 0; i < kKvTile; ++i) kv[size_t(kKvDim) + i] = normal(1e-6f);  // amax below the floor
  const auto kv_bf = to_bf16(kv);
  // Distinct random slots, one token left unstored (slot −1).
  std::vector<int32_t> slot(static_cast<size_t>(n_slots));
  for (int i = 0; i < n_slots; ++i) slot[size_t(i)] = i;
  std::shuffle(slot.begin(), slot.end(), rng);
  slot.resize(size_t(c.n_tokens));
  if (c.n_tokens > 2) slot[2] = -1;

  const int64_t page_bytes = kv_page_bytes(c.block_size);
  DeviceBuffer<uint16_t> d_kv(kv_bf);
  DeviceBuffer<int32_t> d_slot(slot);
  DeviceBuffer<uint8_t> d_cache(size_t(page_bytes) * c.n_pages);
  d_cache.fill_bytes(0xA5);  // untouched bytes must stay 0xA5
  KvPackParams p;
  p.kv = bf16_ptr(d_kv);
  p.slot = d_slot.get();
  p.cache = d_cache.get();
  p.n_tokens = c.n_tokens;
  p.block_size = c.block_size;
  launch_kv_pack(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = d_cache.download();

  std::vector<uint8_t> ref(got.size(), 0xA5);
  const auto kvf = from_bf16(kv_bf);
  int64_t n_fq_diff = 0;
  for (int t = 0; t < c.n_tokens; ++t) {
    if (slot[size_t(t)] < 0) continue;
    const int64_t page = slot[size_t(t)] / c.block_size, off = slot[size_t(t)] % c.block_size;
    uint8_t* data = ref.data() + page * page_bytes + off * kKvRowDataBytes;
    uint8_t* scales = ref.data() + page * page_bytes + int64_t(c.block_size) * kKvRowDataBytes + off * kKvRowScaleBytes;
    const float* row = kvf.data() + size_t(t) * kKvDim;
    for (int tile = 0; tile < kKvTiles; ++tile) {
      float amax = 0;
      for (int i = 0; i < kKvTile; ++i) amax = std::max(amax, std::fabs(row[tile * kKvTile + i]));
      scales[tile] = ue8m0_scale_for(amax, kE4M3Max, kActAmaxFloor);
      for (int i = 0; i < kKvTile; ++i)
        data[tile * kKvTile + i] = f32_to_e4m3(row[tile * kKvTile + i] / e8m0_to_f32(scales[tile]));
    }
    scales[kKvTiles] = 0;
    std::memcpy(data + kKvNope, kv_bf.data() + size_t(t) * kKvDim + kKvNope, 2 * kKvRope);
    // The stored NoPE values are exactly the reference's KV fake-quant (§12, 1×64 blocks).
    std::vector<float> fq(row, row + kKvNope);
    fp8_roundtrip_blocks(fq.data(), kKvNope, kKvQuantBlock);
    const uint8_t* gd = got.data() + page * page_bytes + off * kKvRowDataBytes;
    const uint8_t* gs = got.data() + page * page_bytes + int64_t(c.block_size) * kKvRowDataBytes + off * kKvRowScaleBytes;
    for (int i = 0; i < kKvNope; ++i) n_fq_diff += e4m3_to_f32(gd[i]) * e8m0_to_f32(gs[i / kKvTile]) != fq[size_t(i)];
  }
  expect_bytes_equal(cat("kv_pack tokens=", c.n_tokens, " block=", c.block_size), got, ref);
  EXPECT_EQ(n_fq_diff, 0) << "dequantised NoPE differs from fp8_roundtrip_blocks(…, 64)";
}

INSTANTIATE_TEST_SUITE_P(Shapes, KvPackTest,
                         ::testing::Values(KvCase{1, 64, 1},      // decode: one row
                                           KvCase{129, 64, 3},    // window + 1, pages of 64
                                           KvCase{100, 1, 128},   // one row per page (padding)
                                           KvCase{37, 7, 6}));    // odd page size

}  // namespace
}  // namespace dsv4::cuda::test
