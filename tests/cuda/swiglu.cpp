// Parity of kernels/swiglu.cu against a double-precision clamped SwiGLU (§8.2–§8.3), its fused
// FP8 quantisation (and the BF16 fake-quant values) bitwise against util/float_formats.h, and
// the device row count: rows past it stay untouched.
#include <cmath>
#include <cstring>

#include "cuda/kernels/swiglu.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

struct SwigluCase {
  int rows, I;
  bool weighted, quant;
  int active = -1;    // >= 0: device row count (n_rows_active); rows past it must stay poisoned
  bool fake = false;  // the BF16 fake-quant output too (with quant)
};

class SwigluTest : public CudaOpTest, public ::testing::WithParamInterface<SwigluCase> {};

TEST_P(SwigluTest, MatchesReference) {
  const auto c = GetParam();
  const float limit = 10.0f;  // swiglu_limit
  const size_t n = size_t(c.rows) * c.I;
  // σ = 8: a good share of g and v lies beyond ±10, so both clamps are exercised.
  auto gn = normals(n, 8.0f), vn = normals(n, 8.0f);
  gn[0] = 12.5f;  // every case, even n = 1, crosses both clamps at least once
  vn[0] = -17.0f;
  const auto g = to_bf16(gn), v = to_bf16(vn);
  std::vector<float> wr(size_t(c.rows));
  for (auto& w : wr) w = uniform(0.05f, 1.5f);
  DeviceBuffer<uint16_t> d_g(g), d_v(v), d_h(n);
  DeviceBuffer<float> d_wr(wr);
  DeviceBuffer<uint8_t> d_q(c.quant ? n : 0), d_s(c.quant ? n / kActBlockSize : 0);
  DeviceBuffer<uint16_t> d_f(c.fake ? n : 0);
  DeviceBuffer<int32_t> d_active(std::vector<int32_t>{c.active});
  d_h.fill_bytes(kPoisonByte);
  d_q.fill_bytes(kPoisonByte);
  d_s.fill_bytes(kPoisonByte);
  d_f.fill_bytes(kPoisonByte);
  SwigluParams p;
  p.gate = bf16_ptr(d_g);
  p.up = bf16_ptr(d_v);
  p.row_weight = c.weighted ? d_wr.get() : nullptr;
  p.h = bf16_ptr(d_h);
  p.q = c.quant ? d_q.get() : nullptr;
  p.q_scale = c.quant ? d_s.get() : nullptr;
  p.fake = c.fake ? bf16_ptr(d_f) : nullptr;
  p.n_rows_active = c.active >= 0 ? d_active.get() : nullptr;
  p.n_rows = c.rows;
  p.I = c.I;
  p.limit = limit;
  launch_swiglu(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto h_all = d_h.download();
  // Rows past the device count: untouched (every byte still the poison).
  const int live = c.active >= 0 ? std::min(c.active, c.rows) : c.rows;
  const size_t n_live = size_t(live) * c.I;
  int64_t touched = 0;
  for (size_t i = n_live; i < n; ++i) touched += h_all[i] != 0xffffu;
  if (c.quant) {
    const auto q_all = d_q.download(), s_all = d_s.download();
    for (size_t i = n_live; i < n; ++i) touched += q_all[i] != 0xffu;
    for (size_t i = n_live / kActBlockSize; i < s_all.size(); ++i) touched += s_all[i] != 0xffu;
  }
  EXPECT_EQ(touched, 0) << "rows past the device row count were written";
  const auto h = from_bf16(std::vector<uint16_t>(h_all.begin(), h_all.begin() + ptrdiff_t(n_live)));
  const auto gf = from_bf16(g), vf = from_bf16(v);
  // Budget: expf ≤ 2 ulp, one add, one division, two or three products: ≤ 8u relative, then BF16.
  std::vector<double> ref(n_live), budget(n_live);
  int64_t n_clamped = 0;
  for (size_t k = 0; k < n_live; ++k) {
    const double gc = std::min<double>(gf[k], limit), vc = std::clamp<double>(vf[k], -limit, limit);
    n_clamped += (gf[k] > limit) + (std::fabs(vf[k]) > limit);
    ref[k] = gc / (1 + std::exp(-gc)) * vc * (c.weighted ? wr[k / size_t(c.I)] : 1.0);
    budget[k] = std::fabs(ref[k]) * (kBf16HalfUlp * (1 + 8 * kF32Unit) + 8 * kF32Unit) + 1e-30;
  }
  if (live > 0) {
    EXPECT_GE(n_clamped, 2) << "inputs never reached the clamp";
  }
  expect_parity(cat("swiglu rows=", c.rows, " I=", c.I, c.weighted ? " weighted" : ""), h, ref, budget);

  if (c.quant) {
    const int nb = c.I / int(kActBlockSize);
    std::vector<uint8_t> q_ref(n_live), s_ref(size_t(live) * nb);
    std::vector<uint16_t> f_ref(n_live);
    for (size_t b = 0; b < s_ref.size(); ++b) {
      const float* blk = h.data() + b * kActBlockSize;
      float amax = 0;
      for (int i = 0; i < kActBlockSize; ++i) amax = std::max(amax, std::fabs(blk[i]));
      s_ref[b] = ue8m0_scale_for(amax, kE4M3Max, kActAmaxFloor);
      for (int i = 0; i < kActBlockSize; ++i) {
        const size_t at = b * kActBlockSize + i;
        q_ref[at] = f32_to_e4m3(blk[i] / e8m0_to_f32(s_ref[b]));
        f_ref[at] = f32_to_bf16(e4m3_to_f32(q_ref[at]) * e8m0_to_f32(s_ref[b]));  // exact product
      }
    }
    const auto s_got = d_s.download(), q_got = d_q.download();
    expect_bytes_equal(cat("swiglu q_scale rows=", c.rows, " I=", c.I),
                       std::vector<uint8_t>(s_got.begin(), s_got.begin() + ptrdiff_t(s_ref.size())), s_ref);
    expect_bytes_equal(cat("swiglu q rows=", c.rows, " I=", c.I),
                       std::vector<uint8_t>(q_got.begin(), q_got.begin() + ptrdiff_t(n_live)), q_ref);
    if (c.fake) {
      const auto f_got = d_f.download();
      std::vector<uint8_t> fg(n_live * 2), fr(n_live * 2);
      std::memcpy(fg.data(), f_got.data(), fg.size());
      std::memcpy(fr.data(), f_ref.data(), fr.size());
      expect_bytes_equal(cat("swiglu fake rows=", c.rows, " I=", c.I), fg, fr);
      int64_t fake_touched = 0;
      for (size_t i = n_live; i < n; ++i) fake_touched += f_got[i] != 0xffffu;
      EXPECT_EQ(fake_touched, 0) << "fake rows past the device row count were written";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, SwigluTest,
                         ::testing::Values(SwigluCase{6, 2048, true, true},    // Flash routed experts, decode
                                           SwigluCase{1, 2048, false, true},   // shared expert
                                           SwigluCase{6, 3072, true, true},    // Pro
                                           SwigluCase{3, 129, true, false},    // odd width
                                           SwigluCase{1, 1, false, false},
                                           // grouped rows of a plan: a device row count
                                           SwigluCase{384, 2048, true, true, 301, true},
                                           SwigluCase{64, 256, true, true, 0, true},
                                           SwigluCase{16, 128, false, true, 16, true},     // BF16 shared w2
                                           SwigluCase{70000, 128, true, true, 69999, false}));  // rows past grid.y

}  // namespace
}  // namespace dsv4::cuda::test
