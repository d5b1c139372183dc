// CPU blocks against independent formulas on fresh random data: Sinkhorn, HC pre/post/head (§3),
// RoPE tables and rotation (§4.4), Hadamard (§6), compressor pooling/emission/visibility and
// chunking invariance (§5). The whole-model oracle (HF) is test_parity.cpp's.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

#include "cpu/compressor.h"
#include "cpu/indexer.h"
#include "cpu/mhc.h"
#include "cpu/rope.h"
#include "support/test_util.h"

namespace dsv4 {
namespace {

ModelConfig small_config(int64_t D) {
  ModelConfig c;
  c.hidden_size = D;
  c.hc_mult = 4;
  c.hc_sinkhorn_iters = 20;
  c.hc_eps = 1e-6;
  c.rms_norm_eps = 1e-6;
  c.head_dim = 128;
  c.qk_rope_head_dim = 64;
  return c;
}

// Reference Sinkhorn in double, written from §3.1 step 7.
std::vector<double> sinkhorn_ref(const std::vector<float>& m, int n, int iters, double eps) {
  std::vector<double> c(m.begin(), m.end());
  for (int a = 0; a < n; ++a) {
    double mx = -1e300, s = 0;
    for (int b = 0; b < n; ++b) mx = std::max(mx, c[a * n + b]);
    for (int b = 0; b < n; ++b) s += std::exp(c[a * n + b] - mx);
    for (int b = 0; b < n; ++b) c[a * n + b] = std::exp(c[a * n + b] - mx) / s + eps;
  }
  for (int it = 0; it < iters; ++it) {
    if (it > 0)
      for (int a = 0; a < n; ++a) {
        double s = 0;
        for (int b = 0; b < n; ++b) s += c[a * n + b];
        for (int b = 0; b < n; ++b) c[a * n + b] /= s + eps;
      }
    for (int b = 0; b < n; ++b) {
      double s = 0;
      for (int a = 0; a < n; ++a) s += c[a * n + b];
      for (int a = 0; a < n; ++a) c[a * n + b] /= s + eps;
    }
  }
  return c;
}

TEST(Sinkhorn, DoublyStochasticAndMatchesDoubleReference) {
  test::Rng rng(10);
  const int n = 4;
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> m = rng.normals(n * n, 2.0f);
    const std::vector<double> ref = sinkhorn_ref(m, n, 20, 1e-6);
    sinkhorn(m.data(), n, 20, 1e-6f);
    for (int a = 0; a < n; ++a) {
      double row = 0, col = 0;
      for (int b = 0; b < n; ++b) {
        // FP32 vs double over ~40 normalisations of O(1) values: a few FP32 ulps each.
        EXPECT_NEAR(m[a * n + b], ref[a * n + b], 1e-5);
        row += m[a * n + b];
        col += m[b * n + a];
      }
      EXPECT_NEAR(col, 1.0, 1e-5);  // last step normalises columns
      // Rows are only approximately normalised after 20 iterations (convergence depends on the
      // logits), so no bound is claimed for them; they stay positive and below n.
      EXPECT_GT(row, 0.0);
      EXPECT_LT(row, double(n));
    }
  }
}

TEST(HyperConnections, PreOrientationAndPostAgainstFormulas) {
  const int64_t D = 16, n = 4, T = 3;
  const ModelConfig cfg = small_config(D);
  ThreadPool pool(2);
  const CpuContext ctx{cfg, {}, pool, nullptr};
  test::Rng rng(11);
  std::vector<float> fn = rng.normals(24 * n * D, 0.3f), base = rng.normals(24),
                     scale = rng.normals(3);
  HyperConnWeights w{test::f32_matrix(fn, 24, n * D), test::f32_matrix(base, 1, 24),
                     test::f32_matrix(scale, 1, 3)};
  std::vector<float> X = rng.normals(T * n * D), f = rng.normals(T * D);
  std::vector<float> u(T * D);
  HcMix mix;
  hc_pre(ctx, w, X.data(), T, u.data(), &mix);
  std::vector<float> Xp = X;
  hc_post(ctx, f.data(), mix, Xp.data(), T);
  for (int64_t t = 0; t < T; ++t) {
    const float* x = X.data() + t * n * D;
    double ss = 0;
    for (int64_t i = 0; i < n * D; ++i) ss += double(x[i]) * x[i];
    const double r = 1.0 / std::sqrt(ss / double(n * D) + 1e-6);
    std::vector<double> mm(24);
    for (int k = 0; k < 24; ++k) {
      double s = 0;
      for (int64_t i = 0; i < n * D; ++i) s += double(fn[k * n * D + i]) * x[i] * r;
      mm[k] = s;
    }
    auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
    std::vector<float> comb_logits(16);
    for (int k = 0; k < 16; ++k) comb_logits[k] = float(scale[2] * mm[8 + k] + base[8 + k]);
    const std::vector<double> C = sinkhorn_ref(comb_logits, 4, 20, 1e-6);
    for (int64_t d = 0; d < D; ++d) {
      double uu = 0;
      for (int j = 0; j < n; ++j) uu += (sig(scale[0] * mm[j] + base[j]) + 1e-6) * x[j * D + d];
      EXPECT_NEAR(u[t * D + d], uu, 1e-4 * (1 + std::abs(uu)));
      for (int b = 0; b < n; ++b) {
        // §3.2: X'_b = post_b·f + Σ_a C[a][b]·X_a  (a = source row)
        double v = 2 * sig(scale[1] * mm[4 + b] + base[4 + b]) * f[t * D + d];
        for (int a = 0; a < n; ++a) v += C[a * 4 + b] * x[a * D + d];
        EXPECT_NEAR(Xp[t * n * D + b * D + d], v, 1e-4 * (1 + std::abs(v)));
      }
    }
  }
}

TEST(Rope, YarnTableMatchesSection44) {
  RopeParams p;
  p.theta = 160000;
  p.yarn = true;
  p.factor = 16;
  p.original_max_position = 65536;
  const RopeTable t = make_rope_table(p, 64);
  RopeParams plain;
  plain.theta = 160000;
  const RopeTable base = make_rope_table(plain, 64);
  // §4.4: lo = 15, hi = 25; pairs 0–15 unchanged, 25–31 divided by 16, pair 20 × 0.53125.
  for (int i = 0; i < 32; ++i) {
    const double ratio = double(t.inv_freq[i]) / double(base.inv_freq[i]);
    const double ramp = std::clamp((i - 15.0) / 10.0, 0.0, 1.0);
    EXPECT_NEAR(ratio, (1 - ramp) + ramp / 16, 1e-6) << "pair " << i;
    EXPECT_NEAR(base.inv_freq[i], std::pow(160000.0, -2.0 * i / 64), 1e-6 * base.inv_freq[i]);
  }
  EXPECT_NEAR(double(t.inv_freq[20]) / base.inv_freq[20], 0.53125, 1e-6);
}

TEST(Rope, InverseUndoesAndDotDependsOnDistanceOnly) {
  RopeParams p;  // main table
  const RopeTable t = make_rope_table(p, 64);
  test::Rng rng(12);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t pos = rng.integer(0, 5000), dim = 128;
    std::vector<float> x = rng.normals(dim), y = x;
    apply_rope(t, y.data(), dim, pos);
    for (int64_t i = 0; i < 64; ++i) EXPECT_EQ(y[i], x[i]);  // NoPE part untouched
    apply_rope(t, y.data(), dim, pos, true);
    for (int64_t i = 0; i < dim; ++i) EXPECT_NEAR(y[i], x[i], 1e-5f);
    // ⟨R_a q, R_b k⟩ = ⟨R_{a+δ} q, R_{b+δ} k⟩: the interleaved layout rotates pairs (2i, 2i+1).
    std::vector<float> q = rng.normals(dim), k = rng.normals(dim);
    const int64_t a = rng.integer(0, 300), b = rng.integer(0, 300), delta = rng.integer(1, 300);
    auto rot_dot = [&](int64_t pa, int64_t pb) {
      std::vector<float> qq = q, kk = k;
      apply_rope(t, qq.data(), dim, pa);
      apply_rope(t, kk.data(), dim, pb);
      double s = 0;
      for (int64_t i = 0; i < dim; ++i) s += double(qq[i]) * kk[i];
      return s;
    };
    // FP32 angles at positions ≤ 600: error ~ 600·2^-24 rad per pair, times |q||k| ~ 128.
    EXPECT_NEAR(rot_dot(a, b), rot_dot(a + delta, b + delta), 1e-2);
  }
}

TEST(Hadamard, MatchesSylvesterMatrixAndIsInvolution) {
  test::Rng rng(13);
  for (int64_t n : {2, 8, 128}) {
    std::vector<float> x = rng.normals(n), y = x;
    hadamard_normalised(y.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (int64_t j = 0; j < n; ++j)
        s += ((std::popcount(uint64_t(i & j)) & 1) ? -1.0 : 1.0) * x[j];
      EXPECT_NEAR(y[i], s / std::sqrt(double(n)), 1e-5);
    }
    hadamard_normalised(y.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(y[i], x[i], 1e-5);
  }
}

// Compressor against §5.1/§5.2 written directly (double), fed in random chunks.
void check_compressor(int64_t m, int64_t c, int64_t T) {
  const int64_t D = 32, coff = m == 4 ? 2 : 1, cw = coff * c;
  ModelConfig cfg = small_config(D);
  ThreadPool pool(2);
  const CpuContext ctx{cfg, {}, pool, nullptr};
  test::Rng rng(14 + m);
  std::vector<float> wkv = rng.normals(cw * D, 0.2f), wg = rng.normals(cw * D, 0.5f),
                     ape = rng.normals(m * cw), norm = rng.normals(c, 0.2f);
  for (float& v : norm) v += 1.0f;
  CompressorWeights w{m, c, test::f32_matrix(wkv, cw, D), test::f32_matrix(wg, cw, D),
                      test::f32_matrix(ape, m, cw), test::f32_matrix(norm, 1, c)};
  RopeParams rp;
  rp.theta = 160000;
  const RopeTable rope = make_rope_table(rp, 64);
  std::vector<float> x = rng.normals(T * D);

  CompressorState st;
  for (int64_t p = 0; p < T;) {
    const int64_t n = std::min(T - p, rng.integer(1, 2 * m + 3));
    const int64_t before = st.n_entries;
    compressor_step(ctx, w, rope, x.data() + p * D, n, p, st);
    p += n;
    EXPECT_EQ(st.n_entries, p / m);  // §5.4: entry j emitted by token (j+1)·m − 1
    EXPECT_GE(st.n_entries, before);
  }
  ASSERT_EQ(st.n_entries, T / m);
  // Direct formula.
  std::vector<double> a(T * cw), z(T * cw);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < cw; ++e) {
      double sa = 0, sz = 0;
      for (int64_t i = 0; i < D; ++i) {
        sa += double(wkv[e * D + i]) * x[t * D + i];
        sz += double(wg[e * D + i]) * x[t * D + i];
      }
      a[t * cw + e] = sa;
      z[t * cw + e] = sz + ape[(t % m) * cw + e];
    }
  for (int64_t j = 0; j < T / m; ++j) {
    std::vector<double> p(c);
    for (int64_t e = 0; e < c; ++e) {
      std::vector<std::pair<double, double>> slots;  // (logit, value)
      if (coff == 2 && j > 0)
        for (int64_t t = (j - 1) * m; t < j * m; ++t) slots.push_back({z[t * cw + e], a[t * cw + e]});
      const int64_t off = coff == 2 ? c : 0;
      for (int64_t t = j * m; t < (j + 1) * m; ++t)
        slots.push_back({z[t * cw + off + e], a[t * cw + off + e]});
      double mx = -1e300, den = 0, num = 0;
      for (auto& s : slots) mx = std::max(mx, s.first);
      for (auto& s : slots) {
        den += std::exp(s.first - mx);
        num += std::exp(s.first - mx) * s.second;
      }
      p[e] = num / den;
    }
    double ss = 0;
    for (double v : p) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / double(c) + 1e-6);
    std::vector<float> k(c);
    for (int64_t e = 0; e < c; ++e) k[e] = float(p[e] * r * norm[e]);
    apply_rope(rope, k.data(), c, j * m);  // rotation checked separately above
    for (int64_t e = 0; e < c; ++e)
      // Entries are O(1) after the norm; FP32 projections of 32 terms + softmax: ~1e-6 relative.
      EXPECT_NEAR(st.entries[j * c + e], k[e], 2e-5 * (1 + std::abs(k[e]))) << "j=" << j << " e=" << e;
  }
}

TEST(Compressor, CsaMatchesFormulaUnderRandomChunking) { check_compressor(4, 128, 67); }
TEST(Compressor, HcaMatchesFormulaUnderRandomChunking) { check_compressor(128, 128, 300); }

TEST(Compressor, VisibilityRule) {
  // §5.4 / §7.1 worked example: t = 3 sees C_0, t = 5 sees only C_0, t = 7 sees C_1.
  EXPECT_EQ(visible_entries(2, 4), 0);
  EXPECT_EQ(visible_entries(3, 4), 1);
  EXPECT_EQ(visible_entries(5, 4), 1);
  EXPECT_EQ(visible_entries(7, 4), 2);
  EXPECT_EQ(visible_entries(126, 128), 0);
  EXPECT_EQ(visible_entries(127, 128), 1);
}

}  // namespace
}  // namespace dsv4
