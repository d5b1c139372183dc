// Parity of kernels/sparse_attention.cu (the decode kernel, on the FP8 cache) and
// kernels/sparse_attention_prefill.cu (on BF16 key rows) for head_dim 512 and 128 against a
// double-precision sink attention written from §4.3/§7 over the dequantised cache rows (§12 KV
// fake-quant via fp8_roundtrip_blocks), followed by the §4.4 inverse RoPE of the BF16 output; and
// how often each rounds off the exact value's BF16 (the prefill kernel no more often than the
// decode kernel).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <tuple>

#include "cuda/kernels/kv_cache.cuh"
#include "cuda/kernels/rope.cuh"
#include "cuda/kernels/sparse_attention.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

struct AttnCase {
  int n_q, H, n_idx, n_rows;
  int n_masked;   // indices set to −1 per query, at random places in the list
  bool all_masked_query;  // query 0 sees nothing: o must be 0
  int masked_tail = 0;    // the last entries of every list are −1 (decode before the indexer fills k)
};

enum class Kernel { kDecode, kPrefill };

// Rounding bounds of a kernel's sums, in units of FP32 steps (kF32Unit), for the reference below.
struct SumModel {
  double logit;        // × Σ|q·k|·scale: a logit's Q·Kᵀ sums and its product with the softmax scale
  double pv_fixed;     // × Σ p·|v|: the P·V sums' part that does not grow with the list
  double pv_per_key;   // × Σ p·|v| per list entry: the part that does
};
// Decode kernel: each warp sums a quarter of the dims in dim/64 k16 HMMAs at ≤ 8u·Σ|terms| each,
// the 4 warp partials are added (≤ 3u), the product with the scale (u): dim/8 + 4. P·V: a block
// sums ≤ n_idx/8 keys in 3 HMMAs per 16 keys, ≤ 8u of the running Σ p·|v| each: ≤ n_idx·u.
// Prefill kernel: one warp sums the dims in four chains of dim/64 HMMAs, added in order (the
// decode kernel's sums in its order): dim/8 + 4. P·V: each 32-key tile in a fresh chain of 6
// HMMAs, ≤ 8u of the tile's Σ p·|v| each (48u of the whole Σ over all tiles), then one FMA into
// O per tile, ≤ u of the running Σ: 48 + n_idx/32.
SumModel sum_model(Kernel k, int dim) {
  return k == Kernel::kDecode ? SumModel{dim / 8.0 + 4, 0.0, 1.0} : SumModel{dim / 8.0 + 4, 48.0, 1.0 / 32};
}

// NoPE outputs (before the inverse RoPE) whose BF16 bits differ from the exact value rounded to
// BF16. Both kernels round an FP32 result once, so this counts where their FP32 errors crossed
// a rounding boundary: a rate proportional to those errors, which the budgets above (dominated by
// the BF16 rounding itself) cannot see, and which decides how often a model's later FP8
// quantisations flip (bench/results/2026-12-05-h100-prefill-attention-accuracy.md).
int64_t rounding_flips(const std::vector<uint16_t>& got_bits, const std::vector<double>& exact_nope, int n_rows,
                       int dim) {
  const int nope = kv_nope(dim);
  int64_t flips = 0;
  for (int r = 0; r < n_rows; ++r)
    for (int d = 0; d < nope; ++d)
      flips += got_bits[size_t(r) * dim + d] != f32_to_bf16(float(exact_nope[size_t(r) * nope + d]));
  return flips;
}

// Launches the kernel under test: on the packed cache (decode), or on the same rows as BF16 key
// rows (prefill: the dequantised values, which are exact in BF16; kv_gather's own test checks the
// gather gives these bits).
void launch_kernel_under_test(Kernel k, SparseAttnParams p, DeviceBuffer<uint16_t>& keys) {
  p.keys = k == Kernel::kPrefill ? bf16_ptr(keys) : nullptr;
  launch_sparse_attention(p, nullptr);
}

// The cache rows as the kernels see them: NoPE through the reference's KV fake-quant, RoPE as
// stored (BF16).
std::vector<float> dequantised_rows(const std::vector<uint16_t>& kv_bf, int n_rows, int dim) {
  std::vector<float> k = from_bf16(kv_bf);
  for (int r = 0; r < n_rows; ++r) fp8_roundtrip_blocks(k.data() + size_t(r) * dim, kv_nope(dim), kKvQuantBlock);
  return k;
}

class SparseAttentionTest : public CudaOpTest,
                            public ::testing::WithParamInterface<std::tuple<AttnCase, int, Kernel>> {};

TEST_P(SparseAttentionTest, MatchesReference) {
  const auto [c, dim, kernel] = GetParam();
  const SumModel model = sum_model(kernel, dim);
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
    for (int j = std::max(0, c.n_idx - c.masked_tail); j < c.n_idx; ++j) idx[size_t(qi) * c.n_idx + j] = -1;
  }
  if (c.all_masked_query) std::fill(idx.begin(), idx.begin() + c.n_idx, -1);
  RopeParams table;
  table.theta = 160000;
  table.yarn = true;
  table.factor = 16;
  table.original_max_position = 65536;
  const auto freq = rope_inv_freq(table, kKvRope);
  const std::vector<float> k = dequantised_rows(kv_bf, c.n_rows, dim);

  // Cache rows: row r at slot r, packed by the (separately tested) kv_pack kernel.
  std::vector<int32_t> slots(size_t(c.n_rows));
  for (int r = 0; r < c.n_rows; ++r) slots[size_t(r)] = r;
  DeviceBuffer<uint16_t> d_kv(kv_bf), d_q(q_bf), d_out(q_bf.size());
  DeviceBuffer<int32_t> d_slots(slots), d_idx(idx), d_pos(pos);
  DeviceBuffer<float> d_sink(sink), d_freq(freq);
  DeviceBuffer<uint8_t> d_cache(size_t(kv_page_bytes(block_size, dim)) * n_pages);
  DeviceBuffer<uint16_t> d_keys(to_bf16(k));
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
  launch_kernel_under_test(kernel, p, d_keys);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto got_bits = d_out.download();
  const auto got = from_bf16(got_bits);

  // The same lists with their lengths (entries past the last valid one are all masked): only
  // the valid prefix is read, with the same keys in the same order, so the same bits.
  std::vector<int32_t> count(size_t(c.n_q), 0);
  for (int qi = 0; qi < c.n_q; ++qi)
    for (int j = 0; j < c.n_idx; ++j)
      if (idx[size_t(qi) * c.n_idx + j] >= 0) count[size_t(qi)] = j + 1;
  DeviceBuffer<int32_t> d_count(count);
  d_out.fill_bytes(kPoisonByte);
  p.count = d_count.get();
  launch_kernel_under_test(kernel, p, d_keys);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(d_out.download(), got_bits) << "a list read up to its count differs from the whole list";

  const auto qf = from_bf16(q_bf);
  std::vector<double> ref(got.size()), budget(got.size());
  std::vector<double> exact_nope(size_t(c.n_q) * c.H * nope);  // o before the inverse RoPE
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
        // Logit: BF16 MMAs (products exact; the 1×64 tile scale is a power of two, folded into
        // the BF16 key exactly), the kernel's sums as sum_model says.
        lg_err.push_back(model.logit * kF32Unit * sa * scale);
        m = std::max(m, s * scale);
      }
      const size_t o = (size_t(qi) * c.H + h) * dim;
      if (rows.empty()) {
        for (int d = 0; d < dim; ++d) ref[o + d] = 0, budget[o + d] = 0;
        continue;
      }
      double den = std::exp(double(sink[size_t(h)]) - m), dl = 0;
      double range = std::fabs(double(sink[size_t(h)]) - m);  // largest |argument| of an expf
      for (size_t s = 0; s < rows.size(); ++s)
        den += std::exp(lg[s] - m), dl = std::max(dl, lg_err[s]), range = std::max(range, m - lg[s]);
      std::vector<double> ov(dim, 0.0), err(dim, 0.0);
      for (size_t s = 0; s < rows.size(); ++s) {
        const double ps = std::exp(lg[s] - m) / den;
        for (int d = 0; d < dim; ++d) {
          ov[size_t(d)] += ps * k[size_t(rows[s]) * dim + d];
          // p_s is off by ≤ 2·max|Δℓ| relative (numerator and denominator). The rounded FP32
          // argument x of an expf costs |x|·u relative: a key's weight passes exp(ℓ − m_tile), the
          // later tiles' rescales exp(m_old − m_new) (arguments telescope to ≤ range) and the
          // combine's exp(m_block − m): ≤ 3·range·u, in the numerator and in the denominator.
          // Plus ≤ 64u from the expf results, the rescales and the combine; ≤ u from splitting p
          // into three BF16 terms (|p − hi − mid − lo| ≤ 2^-24·p); the P·V HMMAs (sum_model).
          err[size_t(d)] += ps * std::fabs(k[size_t(rows[s]) * dim + d]) *
                            (2 * dl + (6 * range + 65 + model.pv_fixed + model.pv_per_key * c.n_idx) * kF32Unit);
        }
      }
      for (int d = 0; d < nope; ++d) {
        ref[o + d] = ov[size_t(d)];
        exact_nope[(size_t(qi) * c.H + h) * nope + d] = ov[size_t(d)];
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
  const std::string what = cat(kernel == Kernel::kDecode ? "sparse_attn" : "sparse_attn_prefill", " dim=", dim,
                               " q=", c.n_q, " H=", c.H, " keys=", c.n_idx, " rows=", c.n_rows);
  expect_parity(what, got, ref, budget);

  // The prefill kernel rounds no worse than the decode kernel on the same lists: its NoPE outputs
  // off the exact value's BF16 at most 1.25× as often (the logits are the same sums in the same
  // order, its P·V bound is below the decode kernel's past ~50 keys), plus a few for small cases.
  if (kernel == Kernel::kPrefill) {
    d_out.fill_bytes(kPoisonByte);
    launch_kernel_under_test(Kernel::kDecode, p, d_keys);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    const int n_rows = c.n_q * c.H;
    const int64_t mine = rounding_flips(got_bits, exact_nope, n_rows, dim);
    const int64_t decode = rounding_flips(d_out.download(), exact_nope, n_rows, dim);
    const int64_t n = int64_t(n_rows) * nope;
    std::printf("[flips]  %-52s %lld of %lld NoPE outputs off the exact BF16 (decode kernel: %lld)\n", what.c_str(),
                (long long)mine, (long long)n, (long long)decode);
    EXPECT_LE(double(mine), 1.25 * double(decode) + 4 + double(n) / 2000) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, SparseAttentionTest,
                         ::testing::Combine(::testing::Values(AttnCase{1, 64, 640, 2000, 5, false},  // Flash CSA decode: 128 + 512
                                                              AttnCase{2, 8, 128, 128, 0, false},    // sliding window only
                                                              AttnCase{3, 4, 1, 10, 0, true},        // one key; query 0 masked
                                                              AttnCase{2, 16, 129, 300, 40, false},  // odd tile tail
                                                              AttnCase{1, 1, 33, 40, 33, false},     // heavy masking
                                                              // Decode shapes: Flash (64 heads, 128 + 512 keys) and Pro
                                                              // (128 heads, 128 + 1024) with masked entries spread
                                                              // through the list; a whole list masked; early decode
                                                              // (picks not yet filled: a masked tail); a few queries.
                                                              AttnCase{1, 64, 640, 4000, 60, false},
                                                              AttnCase{1, 128, 1152, 4000, 100, false},
                                                              AttnCase{2, 64, 640, 3000, 30, true},
                                                              AttnCase{2, 64, 640, 3000, 10, false, 500},
                                                              AttnCase{4, 64, 640, 2000, 20, false},
                                                              // HCA-like long list: several 256-entry chunks per key slice,
                                                              // H not a multiple of the 4-head group.
                                                              AttnCase{1, 6, 4500, 5000, 700, false, 1000},
                                                              // Prefill-shaped: 48 queries of a chunk
                                                              // (Flash CSA lists; the double reference
                                                              // grows with them) and Pro's 128 heads
                                                              // (two blocks of 64 per query).
                                                              AttnCase{48, 64, 640, 3000, 0, false, 37},
                                                              AttnCase{8, 128, 256, 1000, 20, false}),
                                            ::testing::Values(kKvDimV4, kKvDimNano),
                                            ::testing::Values(Kernel::kDecode, Kernel::kPrefill)));

// The forward's graph-vs-eager identity and its chunked prefill lean on this: the same inputs give
// the same bits on every run, and a query's output does not depend on the batch it runs in. Both
// kernels.
class SparseAttentionInvariance : public CudaOpTest, public ::testing::WithParamInterface<Kernel> {};

TEST_P(SparseAttentionInvariance, RepeatableAndBatchInvariant) {
  const Kernel kernel = GetParam();
  const int n_q = 3, H = 64, n_idx = 640, n_rows = 2000, dim = kKvDimV4, block_size = 64;
  const auto kv_bf = to_bf16(normals(size_t(n_rows) * dim));
  const auto q_bf = to_bf16(normals(size_t(n_q) * H * dim, 1.5f));
  std::vector<int32_t> idx(size_t(n_q) * n_idx), slots(static_cast<size_t>(n_rows)), pos(static_cast<size_t>(n_q));
  for (auto& v : idx) v = uniform_int(0, 9) == 0 ? -1 : uniform_int(0, n_rows - 1);
  for (int r = 0; r < n_rows; ++r) slots[size_t(r)] = r;
  for (auto& t : pos) t = uniform_int(0, (1 << 20) - 1);
  std::vector<float> freq(kKvRope / 2);
  for (auto& f : freq) f = uniform(1e-4f, 1.0f);
  DeviceBuffer<uint16_t> d_kv(kv_bf), d_q(q_bf), d_a(q_bf.size()), d_b(q_bf.size()), d_c(size_t(H) * dim);
  DeviceBuffer<int32_t> d_slots(slots), d_idx(idx), d_pos(pos);
  DeviceBuffer<float> d_sink(normals(size_t(H), 2.0f)), d_freq(freq);
  DeviceBuffer<uint8_t> d_cache(size_t(kv_page_bytes(block_size, dim)) * ((n_rows + block_size - 1) / block_size));
  DeviceBuffer<uint16_t> d_keys(to_bf16(dequantised_rows(kv_bf, n_rows, dim)));
  KvPackParams kp;
  kp.kv = bf16_ptr(d_kv);
  kp.slot = d_slots.get();
  kp.cache = d_cache.get();
  kp.n_tokens = n_rows;
  kp.block_size = block_size;
  kp.dim = dim;
  launch_kv_pack(kp, nullptr);
  SparseAttnParams p;
  p.q = bf16_ptr(d_q);
  p.cache = d_cache.get();
  p.indices = d_idx.get();
  p.sink = d_sink.get();
  p.pos = d_pos.get();
  p.inv_freq = d_freq.get();
  p.n_q = n_q;
  p.H = H;
  p.n_idx = n_idx;
  p.block_size = block_size;
  p.dim = dim;
  p.softmax_scale = 1.0f / std::sqrt(float(dim));
  p.out = bf16_ptr(d_a);
  launch_kernel_under_test(kernel, p, d_keys);
  p.out = bf16_ptr(d_b);
  launch_kernel_under_test(kernel, p, d_keys);
  // The last query alone.
  const int last = n_q - 1;
  p.q = bf16_ptr(d_q) + size_t(last) * H * dim;
  p.indices = d_idx.get() + size_t(last) * n_idx;
  p.pos = d_pos.get() + last;
  p.n_q = 1;
  p.out = bf16_ptr(d_c);
  launch_kernel_under_test(kernel, p, d_keys);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto a = d_a.download(), b = d_b.download(), c1 = d_c.download();
  int64_t repeat_diff = 0, batch_diff = 0;
  for (size_t i = 0; i < a.size(); ++i) repeat_diff += a[i] != b[i];
  for (size_t i = 0; i < c1.size(); ++i) batch_diff += c1[i] != a[size_t(last) * H * dim + i];
  EXPECT_EQ(repeat_diff, 0) << "elements that differ between two identical launches";
  EXPECT_EQ(batch_diff, 0) << "elements of the last query that differ between n_q = 3 and n_q = 1";
}

INSTANTIATE_TEST_SUITE_P(Kernels, SparseAttentionInvariance, ::testing::Values(Kernel::kDecode, Kernel::kPrefill));

}  // namespace
}  // namespace dsv4::cuda::test
