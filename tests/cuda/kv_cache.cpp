// Parity of kernels/kv_cache.cu for head_dim 512 (V4) and 128 (nano): every packed byte of the
// MODEL1-style page against a host packing built from util/float_formats.h, and the dequantised
// NoPE values against the quant module's 1×64 KV fake-quant (fp8_roundtrip_blocks, §12).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

#include "cuda/kernels/kv_cache.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "util/error.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

// The MODEL1 sizes (§13: 584 bytes per row = 448 E4M3 + 128 BF16 + 8 scale bytes; pages padded
// to 576-byte multiples). Host-only: runs without a GPU.
TEST(KvLayout, Model1Sizes) {
  EXPECT_EQ(kv_row_data_bytes(kKvDimV4), 576);
  EXPECT_EQ(kv_row_data_bytes(kKvDimV4) + kv_row_scale_bytes(kKvDimV4), 584);
  EXPECT_EQ(kv_page_bytes(64, kKvDimV4), 65 * 576);  // 64·584 = 37376 → 37440
  EXPECT_EQ(kv_page_bytes(1, kKvDimV4), 2 * 576);
  EXPECT_EQ(kv_page_bytes(72, kKvDimV4), 73 * 576);  // 72·584 = 42048 = 73·576 exactly
}

// head_dim 128: 64 E4M3 + 64 BF16 = 192 data bytes, 1 scale + 1 pad byte; pages padded to
// 192-byte multiples (every row stays 16-byte aligned).
TEST(KvLayout, Dim128Sizes) {
  EXPECT_EQ(kv_row_data_bytes(kKvDimNano), 192);
  EXPECT_EQ(kv_row_scale_bytes(kKvDimNano), 2);
  EXPECT_EQ(kv_page_bytes(64, kKvDimNano), 65 * 192);  // 64·194 = 12416 → 12480
  EXPECT_EQ(kv_page_bytes(1, kKvDimNano), 2 * 192);
  EXPECT_EQ(kv_page_bytes(96, kKvDimNano), 97 * 192);  // 96·194 = 18624 = 97·192 exactly
}

// Unsupported head dims are refused before anything touches the device (host pointers suffice:
// the launcher's check fires first). Host-only: runs without a GPU.
TEST(KvLayout, RejectsOtherDims) {
  std::vector<uint16_t> kv(576);
  std::vector<int32_t> slot(1, 0);
  std::vector<uint8_t> cache(size_t(kv_page_bytes(1, kKvDimV4)));
  KvPackParams p;
  p.kv = reinterpret_cast<const __nv_bfloat16*>(kv.data());
  p.slot = slot.data();
  p.cache = cache.data();
  p.n_tokens = 1;
  p.block_size = 1;
  for (int dim : {0, 64, 256, 576}) {
    p.dim = dim;
    EXPECT_THROW(launch_kv_pack(p, nullptr), InternalError) << "dim=" << dim;
  }
}

struct KvCase {
  int n_tokens, block_size, n_pages;
};

class KvPackTest : public CudaOpTest, public ::testing::WithParamInterface<std::tuple<KvCase, int>> {};

TEST_P(KvPackTest, BytesMatchHostPacking) {
  const auto [c, dim] = GetParam();
  const int nope = kv_nope(dim), tiles = kv_tiles(dim);
  const int data_bytes = kv_row_data_bytes(dim), scale_bytes = kv_row_scale_bytes(dim);
  const int n_slots = c.block_size * c.n_pages;
  ASSERT_LE(c.n_tokens, n_slots);
  // Rows with per-row magnitudes from 2^-8 to 2^8 (tiles near the 1e-4 floor included).
  std::vector<float> kv(size_t(c.n_tokens) * dim);
  for (int t = 0; t < c.n_tokens; ++t) {
    const float mag = std::ldexp(1.0f, uniform_int(-8, 8));
    for (int i = 0; i < dim; ++i) kv[size_t(t) * dim + i] = normal(mag);
  }
  if (c.n_tokens > 1)
    for (int i = 0; i < kKvTile; ++i) kv[size_t(dim) + i] = normal(1e-6f);  // amax below the floor
  const auto kv_bf = to_bf16(kv);
  // Distinct random slots, one token left unstored (slot −1).
  std::vector<int32_t> slot(static_cast<size_t>(n_slots));
  for (int i = 0; i < n_slots; ++i) slot[size_t(i)] = i;
  std::shuffle(slot.begin(), slot.end(), rng);
  slot.resize(size_t(c.n_tokens));
  if (c.n_tokens > 2) slot[2] = -1;

  const int64_t page_bytes = kv_page_bytes(c.block_size, dim);
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
  p.dim = dim;
  launch_kv_pack(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = d_cache.download();

  std::vector<uint8_t> ref(got.size(), 0xA5);
  const auto kvf = from_bf16(kv_bf);
  int64_t n_fq_diff = 0;
  for (int t = 0; t < c.n_tokens; ++t) {
    if (slot[size_t(t)] < 0) continue;
    const int64_t page = slot[size_t(t)] / c.block_size, off = slot[size_t(t)] % c.block_size;
    uint8_t* data = ref.data() + page * page_bytes + off * data_bytes;
    uint8_t* scales = ref.data() + page * page_bytes + int64_t(c.block_size) * data_bytes + off * scale_bytes;
    const float* row = kvf.data() + size_t(t) * dim;
    for (int tile = 0; tile < tiles; ++tile) {
      float amax = 0;
      for (int i = 0; i < kKvTile; ++i) amax = std::max(amax, std::fabs(row[tile * kKvTile + i]));
      scales[tile] = ue8m0_scale_for(amax, kE4M3Max, kActAmaxFloor);
      for (int i = 0; i < kKvTile; ++i)
        data[tile * kKvTile + i] = f32_to_e4m3(row[tile * kKvTile + i] / e8m0_to_f32(scales[tile]));
    }
    scales[tiles] = 0;
    std::memcpy(data + nope, kv_bf.data() + size_t(t) * dim + nope, 2 * kKvRope);
    // The stored NoPE values are exactly the reference's KV fake-quant (§12, 1×64 blocks).
    std::vector<float> fq(row, row + nope);
    fp8_roundtrip_blocks(fq.data(), nope, kKvQuantBlock);
    const uint8_t* gd = got.data() + page * page_bytes + off * data_bytes;
    const uint8_t* gs = got.data() + page * page_bytes + int64_t(c.block_size) * data_bytes + off * scale_bytes;
    for (int i = 0; i < nope; ++i) n_fq_diff += e4m3_to_f32(gd[i]) * e8m0_to_f32(gs[i / kKvTile]) != fq[size_t(i)];
  }
  expect_bytes_equal(cat("kv_pack dim=", dim, " tokens=", c.n_tokens, " block=", c.block_size), got, ref);
  EXPECT_EQ(n_fq_diff, 0) << "dequantised NoPE differs from fp8_roundtrip_blocks(…, 64)";
}

INSTANTIATE_TEST_SUITE_P(Shapes, KvPackTest,
                         ::testing::Combine(::testing::Values(KvCase{1, 64, 1},      // decode: one row
                                                              KvCase{129, 64, 3},    // window + 1, pages of 64
                                                              KvCase{100, 1, 128},   // one row per page (padding)
                                                              KvCase{37, 7, 6}),     // odd page size
                                            ::testing::Values(kKvDimV4, kKvDimNano)));

}  // namespace
}  // namespace dsv4::cuda::test
