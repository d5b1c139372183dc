// Tests of kernels/act_quant.cu: the FP8 1×128 activation quantisation (§12) bitwise against a
// host quantiser written here from the formula (its own E4M3 grid, scale from log2 in double),
// cross-checked against model/quant.h's fp8_roundtrip_blocks for the fake-quant BF16 output.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cuda/kernels/act_quant.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

// OCP E4M3 (bias 7, no infinities, 0x7F NaN): magnitude of code c in 0..126.
double e4m3_magnitude(int c) {
  const int e = c >> 3, m = c & 7;
  return e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
}

// Round to nearest E4M3, ties to the even code, saturating at 448; the sign is kept for zeros.
uint8_t host_e4m3(double v) {
  static const std::vector<double> grid = [] {
    std::vector<double> g(127);
    for (int c = 0; c < 127; ++c) g[size_t(c)] = e4m3_magnitude(c);
    return g;
  }();
  const uint8_t sign = std::signbit(v) ? 0x80 : 0x00;
  const double a = std::fabs(v);
  const int hi = int(std::lower_bound(grid.begin(), grid.end(), a) - grid.begin());  // grid[hi] >= a
  if (hi == 127) return sign | 126;
  if (hi == 0 || grid[size_t(hi)] == a) return sign | uint8_t(hi);
  const double dl = a - grid[size_t(hi - 1)], dh = grid[size_t(hi)] - a;
  const int c = dl < dh ? hi - 1 : dh < dl ? hi : ((hi - 1) % 2 == 0 ? hi - 1 : hi);
  return sign | uint8_t(c);
}

struct HostQuant {
  std::vector<uint8_t> q, scale;
  std::vector<uint16_t> fake;
};

// §12: s = 2^ceil(log2(max(amax, 1e-4) / 448)) per 1×128 block, q = e4m3(x / s), fake = bf16(q·s).
HostQuant host_act_quant(const std::vector<float>& x) {
  HostQuant h;
  h.q.resize(x.size());
  h.fake.resize(x.size());
  h.scale.resize(x.size() / 128);
  for (size_t b = 0; b < h.scale.size(); ++b) {
    double amax = 0;
    for (int i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(double(x[b * 128 + i])));
    const int e = int(std::ceil(std::log2(std::max(amax, double(1e-4f)) / 448.0)));
    h.scale[b] = uint8_t(e + 127);
    const double s = std::ldexp(1.0, e);
    for (int i = 0; i < 128; ++i) {
      const size_t k = b * 128 + i;
      h.q[k] = host_e4m3(x[k] / s);
      const double mag = e4m3_magnitude(h.q[k] & 0x7f) * s;
      h.fake[k] = f32_to_bf16(float((h.q[k] & 0x80) ? -mag : mag));  // exact: 4 significant bits
    }
  }
  return h;
}

struct ActQuantCase {
  int rows, K;
  bool q, fake, alias;
};

class ActQuantTest : public CudaOpTest, public ::testing::WithParamInterface<ActQuantCase> {};

TEST_P(ActQuantTest, MatchesHostQuantiser) {
  const auto c = GetParam();
  const int nb = c.K / 128;
  // Blocks of very different magnitudes, plus the edge cases of the scale: an all-zero block
  // (amax floor), a block below the floor, a block whose amax/448 is an exact power of two (no
  // round-up), signed zeros, and ties of the E4M3 grid (v/s halfway between two codes).
  std::vector<float> x(size_t(c.rows) * c.K);
  for (int r = 0; r < c.rows; ++r)
    for (int b = 0; b < nb; ++b) {
      float* blk = x.data() + size_t(r) * c.K + size_t(b) * 128;
      const int kind = uniform_int(0, 9);
      const float mag = std::ldexp(1.0f, uniform_int(-24, 12));
      for (int i = 0; i < 128; ++i) blk[i] = normal(mag);
      if (kind == 0) std::fill(blk, blk + 128, 0.0f);
      if (kind == 1)
        for (int i = 0; i < 128; ++i) blk[i] = normal(2e-6f);
      if (kind == 2) {
        for (int i = 0; i < 128; ++i) blk[i] = std::clamp(blk[i], -0.9f * 448 * mag, 0.9f * 448 * mag);
        blk[uniform_int(0, 127)] = 448.0f * mag;  // s = mag exactly
      }
      if (kind == 3) {
        // Midpoints between adjacent E4M3 codes at scale s = 2^(e) (amax pinned to 448·2^e).
        const int e = uniform_int(-10, 5);
        for (int i = 0; i < 128; ++i) {
          const int code = uniform_int(0, 125);
          const double mid = 0.5 * (e4m3_magnitude(code) + e4m3_magnitude(code + 1));
          blk[i] = float(std::ldexp(mid, e)) * (uniform_int(0, 1) ? 1.0f : -1.0f);
        }
        blk[0] = std::ldexp(448.0f, e);
        blk[1] = -0.0f;
      }
    }
  auto x_bf = to_bf16(x);
  const auto xf = from_bf16(x_bf);  // what the kernel sees
  const HostQuant ref = host_act_quant(xf);

  DeviceBuffer<uint16_t> d_x(x_bf), d_fake(c.fake && !c.alias ? x_bf.size() : 0);
  DeviceBuffer<uint8_t> d_q(c.q ? x_bf.size() : 0), d_s(c.q ? x_bf.size() / 128 : 0);
  d_fake.fill_bytes(kPoisonByte);
  d_q.fill_bytes(kPoisonByte);
  d_s.fill_bytes(kPoisonByte);
  ActQuantParams p;
  p.x = bf16_ptr(d_x);
  p.q = c.q ? d_q.get() : nullptr;
  p.q_scale = c.q ? d_s.get() : nullptr;
  p.fake = c.fake ? (c.alias ? bf16_ptr(d_x) : bf16_ptr(d_fake)) : nullptr;
  p.rows = c.rows;
  p.K = c.K;
  launch_act_quant(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());

  const std::string tag = cat(" rows=", c.rows, " K=", c.K);
  if (c.q) {
    expect_bytes_equal("act_quant q_scale" + tag, d_s.download(), ref.scale);
    expect_bytes_equal("act_quant q" + tag, d_q.download(), ref.q);
  }
  if (c.fake) {
    const auto fake = c.alias ? d_x.download() : d_fake.download();
    std::vector<uint8_t> got_b(fake.size() * 2), ref_b(fake.size() * 2);
    std::memcpy(got_b.data(), fake.data(), got_b.size());
    std::memcpy(ref_b.data(), ref.fake.data(), ref_b.size());
    expect_bytes_equal("act_quant fake" + tag + (c.alias ? " (in place)" : ""), got_b, ref_b);
    // Cross-check: the model's scalar fake-quantiser gives the same values.
    std::vector<float> rt = xf;
    fp8_roundtrip_blocks(rt.data(), int64_t(rt.size()), kActBlockSize);
    int64_t n_diff = 0;
    for (size_t k = 0; k < rt.size(); ++k) n_diff += bf16_to_f32(fake[k]) != rt[k];
    EXPECT_EQ(n_diff, 0) << "fake differs from fp8_roundtrip_blocks";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ActQuantTest,
                         ::testing::Values(ActQuantCase{1, 7168, true, true, false},    // Pro hidden, decode
                                           ActQuantCase{5, 4096, true, false, false},   // q only
                                           ActQuantCase{3, 1024, false, true, false},   // fake only
                                           ActQuantCase{7, 512, false, true, true},     // fake in place of x
                                           ActQuantCase{2, 128, true, true, false},     // one block per row
                                           ActQuantCase{70001, 128, true, true, false},  // rows beyond grid.y
                                           ActQuantCase{0, 256, true, true, false}));   // empty

}  // namespace
}  // namespace dsv4::cuda::test
