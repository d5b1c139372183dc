// mHC in FP32 (§3, §12 "mHC FP32 throughout"). The 24-wide projection uses the normalised
// flattened streams (RMS over all n·D values, no weight), as HF does; the reference scales after
// the projection, which is the same math.
#include "cpu/mhc.h"

#include <cmath>

#include "cpu/linear.h"
#include "util/error.h"

namespace dsv4 {

namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// mixes [T, rows] = fn · RMSNorm(vec(X_t)) for every token.
std::vector<float> hc_mixes(const CpuContext& ctx, const WeightMatrix& fn, const float* X,
                            int64_t T) {
  const int64_t nD = ctx.cfg.hc_dim();
  DSV4_CHECK_MSG(fn.cols == nD, fn.name);
  std::vector<float> flat(X, X + T * nD);
  rms_norm_rows(flat.data(), T, nD, nullptr, ctx.cfg.rms_norm_eps);
  std::vector<float> mixes(size_t(T * fn.rows));
  linear(ctx, flat.data(), T, fn, mixes.data());
  return mixes;
}

}  // namespace

void sinkhorn(float* m, int64_t n, int64_t iters, float eps) {
  // Row softmax, + eps, column normalise; then (iters − 1) × (row, column) normalisations.
  for (int64_t a = 0; a < n; ++a) {
    float* row = m + a * n;
    float mx = row[0];
    for (int64_t b = 1; b < n; ++b) mx = std::max(mx, row[b]);
    float s = 0.0f;
    for (int64_t b = 0; b < n; ++b) s += (row[b] = std::exp(row[b] - mx));
    for (int64_t b = 0; b < n; ++b) row[b] = row[b] / s + eps;
  }
  auto col_norm = [&] {
    for (int64_t b = 0; b < n; ++b) {
      float s = 0.0f;
      for (int64_t a = 0; a < n; ++a) s += m[a * n + b];
      for (int64_t a = 0; a < n; ++a) m[a * n + b] /= (s + eps);
    }
  };
  auto row_norm = [&] {
    for (int64_t a = 0; a < n; ++a) {
      float s = 0.0f;
      for (int64_t b = 0; b < n; ++b) s += m[a * n + b];
      for (int64_t b = 0; b < n; ++b) m[a * n + b] /= (s + eps);
    }
  };
  col_norm();
  for (int64_t i = 1; i < iters; ++i) {
    row_norm();
    col_norm();
  }
}

void hc_pre(const CpuContext& ctx, const HyperConnWeights& w, const float* X, int64_t T,
            float* u, HcMix* mix) {
  const int64_t n = ctx.cfg.hc_mult, D = ctx.cfg.hidden_size;
  const float eps = float(ctx.cfg.hc_eps);
  const std::vector<float> mixes = hc_mixes(ctx, w.fn, X, T);
  const std::vector<float> base = load_vector(w.base), scale = load_vector(w.scale);
  const int64_t R = (2 + n) * n;
  DSV4_CHECK(int64_t(base.size()) == R && scale.size() == 3);
  mix->post.assign(size_t(T * n), 0.0f);
  mix->comb.assign(size_t(T * n * n), 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    const float* m = mixes.data() + t * R;
    float pre[16];
    DSV4_CHECK(n <= 16);
    for (int64_t j = 0; j < n; ++j) {
      pre[j] = sigmoid(scale[0] * m[j] + base[size_t(j)]) + eps;                       // step 4
      mix->post[size_t(t * n + j)] = 2.0f * sigmoid(scale[1] * m[n + j] + base[size_t(n + j)]);  // 5
    }
    float* c = mix->comb.data() + t * n * n;
    for (int64_t k = 0; k < n * n; ++k) c[k] = scale[2] * m[2 * n + k] + base[size_t(2 * n + k)];
    sinkhorn(c, n, ctx.cfg.hc_sinkhorn_iters, eps);  // step 7
    float* ut = u + t * D;                            // step 8: u = Σ_j pre_j · X_j
    const float* xt = X + t * n * D;
    for (int64_t d = 0; d < D; ++d) {
      float s = 0.0f;
      for (int64_t j = 0; j < n; ++j) s += pre[j] * xt[j * D + d];
      ut[d] = s;
    }
  }
}

void hc_post(const CpuContext& ctx, const float* f, const HcMix& mix, float* X, int64_t T) {
  const int64_t n = ctx.cfg.hc_mult, D = ctx.cfg.hidden_size;
  std::vector<float> old(size_t(n * D));
  for (int64_t t = 0; t < T; ++t) {
    float* xt = X + t * n * D;
    std::copy(xt, xt + n * D, old.begin());
    const float* c = mix.comb.data() + t * n * n;
    const float* post = mix.post.data() + t * n;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t d = 0; d < D; ++d) {
        float s = post[b] * f[t * D + d];
        for (int64_t a = 0; a < n; ++a) s += c[a * n + b] * old[size_t(a * D + d)];
        xt[b * D + d] = s;
      }
  }
}

void hc_head(const CpuContext& ctx, const HyperConnWeights& w, const float* X, int64_t T,
             float* h) {
  const int64_t n = ctx.cfg.hc_mult, D = ctx.cfg.hidden_size;
  const float eps = float(ctx.cfg.hc_eps);
  const std::vector<float> mixes = hc_mixes(ctx, w.fn, X, T);
  const std::vector<float> base = load_vector(w.base), scale = load_vector(w.scale);
  DSV4_CHECK(int64_t(base.size()) == n && scale.size() == 1);
  for (int64_t t = 0; t < T; ++t) {
    float pre[16];
    DSV4_CHECK(n <= 16);
    for (int64_t j = 0; j < n; ++j)
      pre[j] = sigmoid(scale[0] * mixes[size_t(t * n + j)] + base[size_t(j)]) + eps;
    for (int64_t d = 0; d < D; ++d) {
      float s = 0.0f;
      for (int64_t j = 0; j < n; ++j) s += pre[j] * X[t * n * D + j * D + d];
      h[t * D + d] = s;
    }
  }
}

}  // namespace dsv4
