// Parity of kernels/hadamard_fp4.cu: the rotation against the dense Sylvester Hadamard matrix in
// double, and the FP4 outputs bitwise against util/float_formats.h and the quant module's
// fp4_roundtrip_blocks applied to the kernel's own rotated BF16 values (§6, §12); its RoPE bitwise
// against rope.cu.
#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>
#include <utility>

#include "cuda/kernels/hadamard_fp4.cuh"
#include "cuda/kernels/rope.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

class HadamardFp4Test : public CudaOpTest, public ::testing::WithParamInterface<int> {};

// The packed E2M1 bytes and UE8M0 scales of rows y [n, 128] from util/float_formats.h (§12).
std::pair<std::vector<uint8_t>, std::vector<uint8_t>> fp4_reference(const std::vector<float>& y) {
  const float floor_amax = kE2M1Max * std::ldexp(1.0f, -126);  // §12
  std::vector<uint8_t> packed(y.size() / 2, 0), scale(y.size() / kMXFP4BlockSize);
  for (size_t b = 0; b < scale.size(); ++b) {
    float amax = 0;
    for (int i = 0; i < kMXFP4BlockSize; ++i) amax = std::max(amax, std::fabs(y[b * kMXFP4BlockSize + i]));
    scale[b] = ue8m0_scale_for(amax, kE2M1Max, floor_amax);
    for (int i = 0; i < kMXFP4BlockSize; ++i) {
      const size_t k = b * kMXFP4BlockSize + i;
      packed[k / 2] |= uint8_t(f32_to_e2m1(y[k] / e8m0_to_f32(scale[b])) << (4 * (k % 2)));
    }
  }
  return {packed, scale};
}

TEST_P(HadamardFp4Test, MatchesReference) {
  const int n_rows = GetParam();
  constexpr int d = kIndexerDim;
  // Rows of different magnitudes, one of them tiny (scale floor) when there is room.
  std::vector<float> x(size_t(n_rows) * d);
  for (int r = 0; r < n_rows; ++r) {
    const float mag = r == 1 ? 1e-38f : std::ldexp(1.0f, uniform_int(-10, 10));
    for (int i = 0; i < d; ++i) x[size_t(r) * d + i] = normal(mag);
  }
  const auto x_bf = to_bf16(x);
  DeviceBuffer<uint16_t> d_x(x_bf), d_y(x_bf.size()), d_fq(x_bf.size());
  DeviceBuffer<uint8_t> d_packed(size_t(n_rows) * d / 2), d_scale(size_t(n_rows) * d / kMXFP4BlockSize);
  d_y.fill_bytes(kPoisonByte);
  d_fq.fill_bytes(kPoisonByte);
  d_packed.fill_bytes(kPoisonByte);
  d_scale.fill_bytes(kPoisonByte);
  HadamardFp4Params p;
  p.x = bf16_ptr(d_x);
  p.y = bf16_ptr(d_y);
  p.fq = bf16_ptr(d_fq);
  p.packed = d_packed.get();
  p.scale = d_scale.get();
  p.n_rows = n_rows;
  launch_hadamard_fp4(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto y = from_bf16(d_y.download());

  // y_i = Σ_j (−1)^popcount(i & j) x_j / sqrt(128). Budget: 7 butterfly stages (≤ 7u of Σ|x|)
  // and the scale product, then BF16 rounding.
  const auto xf = from_bf16(x_bf);
  std::vector<double> ref(y.size()), budget(y.size());
  for (int r = 0; r < n_rows; ++r) {
    double sa = 0;
    for (int j = 0; j < d; ++j) sa += std::fabs(xf[size_t(r) * d + j]);
    const double e = 9 * kF32Unit * sa / std::sqrt(double(d));
    for (int i = 0; i < d; ++i) {
      double s = 0;
      for (int j = 0; j < d; ++j) s += (std::popcount(unsigned(i & j)) % 2 ? -1.0 : 1.0) * xf[size_t(r) * d + j];
      s /= std::sqrt(double(d));
      ref[size_t(r) * d + i] = s;
      // + half the BF16 subnormal spacing (2^-134): the tiny row rounds on the subnormal grid.
      budget[size_t(r) * d + i] = kBf16HalfUlp * (std::fabs(s) + e) + e + std::ldexp(1.0, -134);
    }
  }
  expect_parity(cat("hadamard rows=", n_rows), y, ref, budget);

  // FP4 of the kernel's own y: scales, nibbles and fake-quant values, bit for bit.
  const auto [packed_ref, scale_ref] = fp4_reference(y);
  expect_bytes_equal(cat("hadamard fp4 scale rows=", n_rows), d_scale.download(), scale_ref);
  expect_bytes_equal(cat("hadamard fp4 packed rows=", n_rows), d_packed.download(), packed_ref);
  std::vector<float> rt = y;
  fp4_roundtrip_blocks(rt.data(), int64_t(rt.size()), kIndexerQuantBlock);
  const auto fq = from_bf16(d_fq.download());
  int64_t n_diff = 0;
  for (size_t k = 0; k < rt.size(); ++k) n_diff += fq[k] != rt[k];
  EXPECT_EQ(n_diff, 0) << "fake-quant differs from fp4_roundtrip_blocks(…, 32)";
}

// row_dst: each row's packed/scale land in its destination row of a larger cache; rows marked −1
// and rows nobody targets keep their poison, y stays in input order.
class HadamardFp4ScatterTest : public CudaOpTest {};  // TEST_F and TEST_P can't share a suite

TEST_F(HadamardFp4ScatterTest, ScattersPackedRows) {
  constexpr int d = kIndexerDim;
  const int n_rows = 37, n_dst = 101;
  std::vector<int32_t> perm(n_dst);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> row_dst(perm.begin(), perm.begin() + n_rows);
  for (int r = 0; r < n_rows; r += uniform_int(2, 6)) row_dst[size_t(r)] = -1;
  const auto x_bf = to_bf16(normals(size_t(n_rows) * d, std::ldexp(1.0f, uniform_int(-6, 6))));
  DeviceBuffer<uint16_t> d_x(x_bf), d_y(x_bf.size());
  DeviceBuffer<int32_t> d_dst(row_dst);
  DeviceBuffer<uint8_t> d_packed(size_t(n_dst) * d / 2), d_scale(size_t(n_dst) * d / kMXFP4BlockSize);
  d_y.fill_bytes(kPoisonByte);
  d_packed.fill_bytes(kPoisonByte);
  d_scale.fill_bytes(kPoisonByte);
  HadamardFp4Params p;
  p.x = bf16_ptr(d_x);
  p.y = bf16_ptr(d_y);
  p.packed = d_packed.get();
  p.scale = d_scale.get();
  p.row_dst = d_dst.get();
  p.n_rows = n_rows;
  launch_hadamard_fp4(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto y = from_bf16(d_y.download());
  const auto [packed_rows, scale_rows] = fp4_reference(y);  // row r = input row r
  constexpr int pb = d / 2, sb = d / kMXFP4BlockSize;
  std::vector<uint8_t> packed_ref(d_packed.size(), uint8_t(kPoisonByte)), scale_ref(d_scale.size(), uint8_t(kPoisonByte));
  for (int r = 0; r < n_rows; ++r) {
    const int t = row_dst[size_t(r)];
    if (t < 0) continue;
    std::copy_n(packed_rows.begin() + int64_t(r) * pb, pb, packed_ref.begin() + int64_t(t) * pb);
    std::copy_n(scale_rows.begin() + int64_t(r) * sb, sb, scale_ref.begin() + int64_t(t) * sb);
  }
  expect_bytes_equal("hadamard fp4 scattered scale", d_scale.download(), scale_ref);
  expect_bytes_equal("hadamard fp4 scattered packed", d_packed.download(), packed_ref);
  int64_t n_unwritten = 0;
  for (float v : y) n_unwritten += !std::isfinite(v);
  EXPECT_EQ(n_unwritten, 0) << "y must stay indexed by input row";
}

// pos: RoPE inside the kernel gives the bytes of rope.cu followed by the kernel (the indexer's
// query heads; rope.cu's own test holds it against its reference).
class HadamardFp4RopeTest : public CudaOpTest {};

TEST_F(HadamardFp4RopeTest, EqualsRopeThenHadamard) {
  constexpr int d = kIndexerDim, kRopeDim = 64;
  const int tokens = 5, heads = 64, n_rows = tokens * heads;
  const auto x_bf = to_bf16(normals(size_t(n_rows) * d, std::ldexp(1.0f, uniform_int(-6, 6))));
  std::vector<int32_t> pos(static_cast<size_t>(tokens));
  for (auto& t : pos) t = uniform_int(1, (1 << 20) - 1);
  const auto freq = rope_inv_freq(RopeParams{}, kRopeDim);
  DeviceBuffer<uint16_t> d_x(x_bf), d_roped(x_bf), d_fq_ref(x_bf.size()), d_fq(x_bf.size()), d_y_ref(x_bf.size()),
      d_y(x_bf.size());
  DeviceBuffer<int32_t> d_pos(pos);
  DeviceBuffer<float> d_freq(freq);
  RopeApplyParams r;
  r.x = bf16_ptr(d_roped);
  r.pos = d_pos.get();
  r.inv_freq = d_freq.get();
  r.n_rows = tokens;
  r.n_heads = heads;
  r.head_dim = d;
  r.rope_dim = kRopeDim;
  r.row_stride = int64_t(heads) * d;
  launch_rope(r, nullptr);
  HadamardFp4Params p;
  p.x = bf16_ptr(d_roped);
  p.y = bf16_ptr(d_y_ref);
  p.fq = bf16_ptr(d_fq_ref);
  p.n_rows = n_rows;
  launch_hadamard_fp4(p, nullptr);
  p.x = bf16_ptr(d_x);
  p.y = bf16_ptr(d_y);
  p.fq = bf16_ptr(d_fq);
  p.pos = d_pos.get();
  p.inv_freq = d_freq.get();
  p.rope_dim = kRopeDim;
  p.rows_per_pos = heads;
  launch_hadamard_fp4(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(d_y.download() == d_y_ref.download()) << "rotated y differs from rope.cu, then the kernel";
  EXPECT_TRUE(d_fq.download() == d_fq_ref.download()) << "FP4 values differ from rope.cu, then the kernel";
  EXPECT_TRUE(d_x.download() == x_bf) << "the kernel wrote its input";
}

INSTANTIATE_TEST_SUITE_P(Rows, HadamardFp4Test,
                         ::testing::Values(1,      // one indexer key (decode)
                                           64,     // Flash indexer query heads
                                           3,      // with the tiny-magnitude row
                                           257));  // odd row count, partial last block

}  // namespace
}  // namespace dsv4::cuda::test
