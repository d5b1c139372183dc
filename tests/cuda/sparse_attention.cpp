// Parity of kernels/sparse_attention.cu (head_dim 512 and 128) against a double-precision sink
// attention written from §4.3/§7 over the dequantised cache rows (§12 KV fake-quant via
// fp8_roundtrip_blocks), followed by the §4.4 inverse RoPE of the BF16 output.
#include <algorithm>
#include <cmath>
#include <tuple>

#include "cuda/kernels/kv_cache.cuh"
#include "cuda/kernels/rope.cuh"
#include "cuda/kernels/sparse_attention.cuh"
#include "model/quant.h"
#include "op_parity.h"

namespace dsv4::cuda::test {
namespace {

struct AttnCase {
  int n_q, H, n_idx, n_rows;
  int n_masked;   // indices set to −1 per query
  bool all_masked_query;  // query 0 sees nothing: o must be 0
};

class SparseAttentionTest : public CudaOpTest, public ::testing::WithParamInterface<std::tuple<AttnCase, int>> {};

TEST_P(SparseAttentionTest, MatchesReference) {
  const auto [c, dim] = GetParam();
  const int nope = kv_nope(dim);
  const int block_size = 64, n_pages = (c.n_rows + block_size - 1) / block_size;
  const float scale = 1.0f / std::sqrt(float(dim));
  // K = V rows as after kv_norm (unit RMS, per-row gain) and queries as after q norm; logits of
  // a few units, so the softmax is neither flat nor one-hot.
  std::vector<float> kv(size_t(c.n_rows) * dim);
  for (int r = 0; r < c.n_rows; ++r) {
    const float g = uniform(0.5f, 2.0f);
    for (int i = 0; i < dim; ++i) kv[size_t(r) * dim + i] = normal(g);
  }
  const auto kv_bf = to_bf16(kv);
  const auto q_bf = to_bf16(normals(size_t(c.n_q) * c.H * dim, 1.5f));
  const auto sink = normals(size_t(c.H), 2.0f);
  std::vector<int32_t> pos(size_t(c.n_q)), idx(size_t(c.n_q) * c.n_idx);
  for (auto& t : pos) t = uniform_int(0, (1 << 20) - 1);
  for (int qi = 0; qi < c.n_q; ++qi) {
    for (int j = 0; j < c.n_idx; ++j) idx[size_t(qi) * c.n_idx + j] = uniform_int(0, c.n_rows - 1);
    for (int j = 0; j < c.n_masked && j < c.n_idx; ++j) idx[size_t(qi) * c.n_idx + uniform_int(0, c.n_idx - 1)] = -1;
  }
  if (c.all_masked_query) std::fill(idx.begin(), idx.begin() + c.n_idx, -1);
  RopeParams table;
  table.theta = 160000;
  table.yarn = true;
  table.factor = 16;
  table.original_max_position = 65536;
  const auto freq = rope_inv_freq(table, kKvRope);

  // Cache rows: row r at slot r, packed by the (separately tested) kv_pack kernel.
  std::vector<int32_t> slots(size_t(c.n_rows));
  for (int r = 0; r < c.n_rows; ++r) slots[size_t(r)] = r;
  DeviceBuffer<uint16_t> d_kv(kv_bf), d_q(q_bf), d_out(q_bf.size());
  DeviceBuffer<int32_t> d_slots(slots), d_idx(idx), d_pos(pos);
  DeviceBuffer<float> d_sink(sink), d_freq(freq);
  DeviceBuffer<uint8_t> d_cache(size_t(kv_page_bytes(block_size, dim)) * n_pages);
  KvPackParams kp;
  kp.kv = bf16_ptr(d_kv);
  kp.slot = d_slots.get();
  kp.cache = d_cache.get();
  kp.n_tokens = c.n_rows;
  kp.block_size = block_size;
  kp.dim = dim;
  launch_kv_pack(kp, nullptr);
  d_out.fill_bytes(kPoisonByte);
  SparseAttnParams p;
  p.q = bf16_ptr(d_q);
  p.cache = d_cache.get();
  p.indices = d_idx.get();
  p.sink = d_sink.get();
  p.pos = d_pos.get();
  p.inv_freq = d_freq.get();
  p.out = bf16_ptr(d_out);
  p.n_q = c.n_q;
  p.H = c.H;
  p.n_idx = c.n_idx;
  p.block_size = block_size;
  p.dim = dim;
  p.softmax_scale = scale;
  launch_sparse_attention(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = from_bf16(d_out.download());

  // Reference K = V rows: NoPE through the reference's KV fake-quant, RoPE as stored (BF16).
  std::vector<float> k = from_bf16(kv_bf);
  for (int r = 0; r < c.n_rows; ++r) fp8_roundtrip_blocks(k.data() + size_t(r) * dim, nope, kKvQuantBlock);
  const auto qf = from_bf16(q_bf);
  std::vector<double> ref(got.size()), budget(got.size());
  for (int qi = 0; qi < c.n_q; ++qi)
    for (int h = 0; h < c.H; ++h) {
      const float* qv = qf.data() + (size_t(qi) * c.H + h) * dim;
      std::vector<double> lg, lg_err;
      std::vector<int> rows;
      double m = -INFINITY;
      for (int j = 0; j < c.n_idx; ++j) {
        const int r = idx[size_t(qi) * c.n_idx + j];
        if (r < 0) continue;
        double s = 0, sa = 0;
        for (int d = 0; d < dim; ++d) {
          const double t = double(qv[d]) * k[size_t(r) * dim + d];
          s += t;
          sa += std::fabs(t);
        }
        rows.push_back(r);
        lg.push_back(s * scale);
        // FP32 logit: ≤ 16-term lane dot (dim/32) + 5 warp adds + scale products: ≤ 24u·Σ|q·k|·scale.
        lg_err.push_back(24 * kF32Unit * sa * scale);
        m = std::max(m, s * scale);
      }
      const size_t o = (size_t(qi) * c.H + h) * dim;
      if (rows.empty()) {
        for (int d = 0; d < dim; ++d) ref[o + d] = 0, budget[o + d] = 0;
        continue;
      }
      double den = std::exp(double(sink[size_t(h)]) - m), dl = 0;
      for (size_t s = 0; s < rows.size(); ++s) den += std::exp(lg[s] - m), dl = std::max(dl, lg_err[s]);
      std::vector<double> ov(dim, 0.0), err(dim, 0.0);
      for (size_t s = 0; s < rows.size(); ++s) {
        const double ps = std::exp(lg[s] - m) / den;
        for (int d = 0; d < dim; ++d) {
          ov[size_t(d)] += ps * k[size_t(rows[s]) * dim + d];
          // p_s is off by ≤ 2·max|Δℓ| relative (numerator and denominator), plus ≤ 64u from
          // expf, the rescales and the FP32 accumulation over ≤ n_idx terms.
          err[size_t(d)] += ps * std::fabs(k[size_t(rows[s]) * dim + d]) * (2 * dl + (64 + c.n_idx) * kF32Unit);
        }
      }
      for (int d = 0; d < nope; ++d) {
        ref[o + d] = ov[size_t(d)];
        budget[o + d] = kBf16HalfUlp * (std::fabs(ov[size_t(d)]) + err[size_t(d)]) + err[size_t(d)] + 1e-30;
      }
      for (int i = 0; i < kKvRope / 2; ++i) {
        const int d = nope + 2 * i;
        const float angle = float(pos[size_t(qi)]) * freq[size_t(i)];
        const double cs = std::cos(double(angle)), sn = std::sin(double(angle));
        const double x0 = ov[size_t(d)], x1 = ov[size_t(d) + 1];
        ref[o + d] = x0 * cs + x1 * sn;
        ref[o + d + 1] = x1 * cs - x0 * sn;
        // BF16 rounding of o (≤ 2^-8 per component, rotated into both), FP32 rotation, BF16 again.
        const double e = kBf16HalfUlp * (std::fabs(x0) + std::fabs(x1)) +
                         (1 + kBf16HalfUlp) * (err[size_t(d)] + err[size_t(d) + 1]) +
                         4 * kF32Unit * (std::fabs(x0) + std::fabs(x1));
        budget[o + d] = kBf16HalfUlp * (std::fabs(ref[o + d]) + e) + e + 1e-30;
        budget[o + d + 1] = kBf16HalfUlp * (std::fabs(ref[o + d + 1]) + e) + e + 1e-30;
      }
    }
  expect_parity(cat("sparse_attn dim=", dim, " q=", c.n_q, " H=", c.H, " keys=", c.n_idx, " rows=", c.n_rows), got, ref, budget);
}

INSTANTIATE_TEST_SUITE_P(Shapes, SparseAttentionTest,
                         ::testing::Combine(::testing::Values(AttnCase{1, 64, 640, 2000, 5, false},  // Flash CSA decode: 128 + 512
                                                              AttnCase{2, 8, 128, 128, 0, false},    // sliding window only
                                                              AttnCase{3, 4, 1, 10, 0, true},        // one key; query 0 masked
                                                              AttnCase{2, 16, 129, 300, 40, false},  // odd tile tail
                                                              AttnCase{1, 1, 33, 40, 33, false}),    // heavy masking
                                            ::testing::Values(kKvDimV4, kKvDimNano)));

}  // namespace
}  // namespace dsv4::cuda::test
