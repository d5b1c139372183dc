// Parity of kernels/mhc.cu against a double-precision HC_pre / HC_post / HC_head written from
// §3.1–§3.3 (including the Cᵀ·X orientation of HC_post), against the CPU backend's FP32 hc_pre
// (src/cpu/mhc.cpp), and of the fused RMSNorm + FP8 quantisation against the unfused output.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/context.h"
#include "cpu/mhc.h"
#include "cuda/kernels/mhc.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"
#include "util/thread_pool.h"

namespace dsv4::cuda::test {
namespace {

constexpr int kN = kHcStreams;
constexpr int kIters = 20;       // hc_sinkhorn_iters
constexpr double kEps = 1e-6;    // hc_eps = rms_norm_eps

struct HcRef {
  double pre[kN], post[kN], comb[kN][kN];
  double dm_max = 0;  // bound on |m_kernel − m| from FP32 summation (see budget below)
};

double sigmoid(double z) { return 1 / (1 + std::exp(-z)); }

// Depth of the fused norm's Σu² in the finish block (mhc.cu collapse): 8 FMAs per chunk of 8
// elements, ceil(D / (8·kMhcFinishThreads)) chunks per thread, a 5-level warp tree and a 4-level
// tree over the 16 warps.
double finish_sum_depth(int D) {
  return 8.0 * ((D / 8 + kMhcFinishThreads - 1) / kMhcFinishThreads) + 5 + 4;
}

// §3.1 in double for one token; dm_bound[i] is the FP32 error bound of mix i.
HcRef hc_pre_ref(const float* x, const std::vector<float>& fn, const std::vector<float>& base,
                 const std::vector<float>& scale, int D, int n_splits) {
  const int nD = kN * D;
  double ss = 0;
  for (int k = 0; k < nD; ++k) ss += double(x[k]) * x[k];
  const double r = 1 / std::sqrt(ss / nD + kEps);
  double m[kHcMix], dm[kHcMix];
  for (int i = 0; i < kHcMix; ++i) {
    double s = 0, sa = 0;
    for (int k = 0; k < nD; ++k) {
      s += double(fn[size_t(i) * nD + k]) * x[k];
      sa += std::fabs(double(fn[size_t(i) * nD + k]) * x[k]);
    }
    m[i] = s * r;
    // FP32: each dot passes through ≤ 4 + 5 + 2 + n_splits adds, Σv² likewise (→ r within half
    // that relative), rsqrtf ≤ 2 ulp, one product: |Δm| ≤ (n_splits + 16)·u·Σ|fn·v|·r + 4u|m|.
    dm[i] = (n_splits + 16) * kF32Unit * sa * r + 4 * kF32Unit * std::fabs(m[i]);
  }
  HcRef o;
  for (int j = 0; j < kN; ++j) {
    o.pre[j] = sigmoid(scale[0] * m[j] + base[size_t(j)]) + kEps;
    o.post[j] = 2 * sigmoid(scale[1] * m[kN + j] + base[size_t(kN + j)]);
  }
  double c[kN][kN];
  for (int a = 0; a < kN; ++a) {
    double mx = -INFINITY, sum = 0;
    for (int b = 0; b < kN; ++b) {
      c[a][b] = scale[2] * m[2 * kN + a * kN + b] + base[size_t(2 * kN + a * kN + b)];
      mx = std::max(mx, c[a][b]);
    }
    for (int b = 0; b < kN; ++b) sum += c[a][b] = std::exp(c[a][b] - mx);
    for (int b = 0; b < kN; ++b) c[a][b] = c[a][b] / sum + kEps;
  }
  auto cols = [&] {
    for (int b = 0; b < kN; ++b) {
      double s = 0;
      for (int a = 0; a < kN; ++a) s += c[a][b];
      for (int a = 0; a < kN; ++a) c[a][b] /= s + kEps;
    }
  };
  cols();
  for (int it = 1; it < kIters; ++it) {
    for (int a = 0; a < kN; ++a) {
      double s = 0;
      for (int b = 0; b < kN; ++b) s += c[a][b];
      for (int b = 0; b < kN; ++b) c[a][b] /= s + kEps;
    }
    cols();
  }
  for (int a = 0; a < kN; ++a)
    for (int b = 0; b < kN; ++b) o.comb[a][b] = c[a][b];
  o.dm_max = *std::max_element(dm, dm + kHcMix);
  return o;
}

struct MhcCase {
  int tokens, D;
};

class MhcTest : public CudaOpTest, public ::testing::WithParamInterface<MhcCase> {};

TEST_P(MhcTest, PreMatchesReference) {
  const auto c = GetParam();
  const int nD = kN * c.D, n_splits = nD / kMhcSplit;
  const auto x = to_bf16(normals(size_t(c.tokens) * nD, 1.5f));
  // fn scaled so that the mixes m are O(1) like a trained model's; scales/bases of either sign.
  const auto fn = normals(size_t(kHcMix) * nD, 1.0f / std::sqrt(float(nD)));
  const auto base = normals(kHcMix, 0.5f);
  const std::vector<float> scale = {uniform(0.5f, 2.0f), uniform(0.5f, 2.0f), uniform(0.5f, 4.0f)};
  DeviceBuffer<uint16_t> d_x(x), d_u(size_t(c.tokens) * c.D);
  DeviceBuffer<float> d_fn(fn), d_base(base), d_scale(scale), d_part(mhc_pre_partial_floats(c.tokens, c.D)),
      d_post(size_t(c.tokens) * kN), d_comb(size_t(c.tokens) * kN * kN);
  d_u.fill_bytes(kPoisonByte);
  d_post.fill_bytes(kPoisonByte);
  d_comb.fill_bytes(kPoisonByte);
  MhcPreParams p;
  p.x = bf16_ptr(d_x);
  p.fn = d_fn.get();
  p.base = d_base.get();
  p.scale = d_scale.get();
  p.partial = d_part.get();
  p.u = bf16_ptr(d_u);
  p.post = d_post.get();
  p.comb = d_comb.get();
  p.n_tokens = c.tokens;
  p.D = c.D;
  p.sinkhorn_iters = kIters;
  p.hc_eps = float(kEps);
  p.rms_eps = float(kEps);
  launch_mhc_pre(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto u = from_bf16(d_u.download());
  const auto post = d_post.download(), comb = d_comb.download();

  const auto xf = from_bf16(x);
  std::vector<double> post_ref, post_b, comb_ref, comb_b, u_ref, u_b;
  for (int t = 0; t < c.tokens; ++t) {
    const HcRef r = hc_pre_ref(xf.data() + size_t(t) * nD, fn, base, scale, c.D, n_splits);
    // Budgets from |Δm| ≤ dm: sigmoid' ≤ 1/4 → |Δpre| ≤ scale0·dm/4, |Δpost| ≤ scale1·dm/2 (+ a
    // few u for expf and the division). Sinkhorn: diagonal scalings do not increase Hilbert's
    // projective distance, so C stays within a factor e^(±2·scale2·dm) of exact; 39 FP32
    // normalisations add ≤ 6u each: |ΔC| ≤ C·(4·scale2·dm + 256u).
    const double dpre = scale[0] * r.dm_max / 4 + 8 * kF32Unit;
    for (int j = 0; j < kN; ++j) {
      post_ref.push_back(r.post[j]);
      post_b.push_back(scale[1] * r.dm_max / 2 + 8 * kF32Unit);
    }
    for (int a = 0; a < kN; ++a)
      for (int b = 0; b < kN; ++b) {
        comb_ref.push_back(r.comb[a][b]);
        comb_b.push_back(r.comb[a][b] * (4 * scale[2] * r.dm_max + 256 * kF32Unit) + 1e-12);
      }
    for (int d = 0; d < c.D; ++d) {
      double s = 0, sa = 0, sx = 0;
      for (int j = 0; j < kN; ++j) {
        const double xv = xf[size_t(t) * nD + size_t(j) * c.D + d];
        s += r.pre[j] * xv;
        sa += std::fabs(r.pre[j] * xv);
        sx += std::fabs(xv);
      }
      u_ref.push_back(s);
      const double fp32 = dpre * sx + 4 * kF32Unit * sa;
      u_b.push_back(kBf16HalfUlp * (std::fabs(s) + fp32) + fp32 + 1e-30);
    }
  }
  expect_parity(cat("mhc_pre post T=", c.tokens, " D=", c.D), post, post_ref, post_b);
  expect_parity(cat("mhc_pre comb T=", c.tokens, " D=", c.D), comb, comb_ref, comb_b);
  expect_parity(cat("mhc_pre u T=", c.tokens, " D=", c.D), u, u_ref, u_b);
}

TEST_P(MhcTest, HeadMatchesReference) {
  const auto c = GetParam();
  const int nD = kN * c.D, n_splits = nD / kMhcSplit;
  const auto x = to_bf16(normals(size_t(c.tokens) * nD, 1.5f));
  const auto fn = normals(size_t(kN) * nD, 1.0f / std::sqrt(float(nD)));
  const auto base = normals(kN, 0.5f);
  const std::vector<float> scale = {uniform(0.5f, 2.0f)};
  DeviceBuffer<uint16_t> d_x(x), d_h(size_t(c.tokens) * c.D);
  DeviceBuffer<float> d_fn(fn), d_base(base), d_scale(scale), d_part(mhc_pre_partial_floats(c.tokens, c.D));
  d_h.fill_bytes(kPoisonByte);
  MhcHeadParams p;
  p.x = bf16_ptr(d_x);
  p.fn = d_fn.get();
  p.base = d_base.get();
  p.scale = d_scale.get();
  p.partial = d_part.get();
  p.h = bf16_ptr(d_h);
  p.n_tokens = c.tokens;
  p.D = c.D;
  p.hc_eps = float(kEps);
  p.rms_eps = float(kEps);
  launch_mhc_head(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto h = from_bf16(d_h.download());
  const auto xf = from_bf16(x);
  std::vector<double> ref, budget;
  for (int t = 0; t < c.tokens; ++t) {
    const float* xt = xf.data() + size_t(t) * nD;
    double ss = 0;
    for (int k = 0; k < nD; ++k) ss += double(xt[k]) * xt[k];
    const double r = 1 / std::sqrt(ss / nD + kEps);
    double pre[kN], dpre = 0;
    for (int j = 0; j < kN; ++j) {
      double s = 0, sa = 0;
      for (int k = 0; k < nD; ++k) {
        s += double(fn[size_t(j) * nD + k]) * xt[k];
        sa += std::fabs(double(fn[size_t(j) * nD + k]) * xt[k]);
      }
      pre[j] = sigmoid(scale[0] * s * r + base[size_t(j)]) + kEps;
      // Same derivation as HC_pre: |Δm| ≤ (n_splits + 16)·u·Σ|fn·v|·r + 4u|m|, sigmoid' ≤ 1/4.
      const double dm = (n_splits + 16) * kF32Unit * sa * r + 4 * kF32Unit * std::fabs(s * r);
      dpre = std::max(dpre, scale[0] * dm / 4 + 8 * kF32Unit);
    }
    for (int d = 0; d < c.D; ++d) {
      double s = 0, sa = 0, sx = 0;
      for (int j = 0; j < kN; ++j) {
        const double xv = xt[size_t(j) * c.D + d];
        s += pre[j] * xv;
        sa += std::fabs(pre[j] * xv);
        sx += std::fabs(xv);
      }
      ref.push_back(s);
      const double fp32 = dpre * sx + 4 * kF32Unit * sa;
      budget.push_back(kBf16HalfUlp * (std::fabs(s) + fp32) + fp32 + 1e-30);
    }
  }
  expect_parity(cat("mhc_head h T=", c.tokens, " D=", c.D), h, ref, budget);
}

TEST_P(MhcTest, PostMatchesReference) {
  const auto c = GetParam();
  const int nD = kN * c.D;
  const auto x = to_bf16(normals(size_t(c.tokens) * nD, 1.0f)), f = to_bf16(normals(size_t(c.tokens) * c.D, 2.0f));
  std::vector<float> post(size_t(c.tokens) * kN), comb(size_t(c.tokens) * kN * kN);
  for (auto& v : post) v = uniform(0.0f, 2.0f);
  for (auto& v : comb) v = uniform(0.0f, 1.0f);  // deliberately not symmetric: orientation matters
  DeviceBuffer<uint16_t> d_x(x), d_f(f), d_out(x.size());
  DeviceBuffer<float> d_post(post), d_comb(comb);
  d_out.fill_bytes(kPoisonByte);
  MhcPostParams p;
  p.f = bf16_ptr(d_f);
  p.x = bf16_ptr(d_x);
  p.post = d_post.get();
  p.comb = d_comb.get();
  p.out = bf16_ptr(d_out);
  p.n_tokens = c.tokens;
  p.D = c.D;
  launch_mhc_post(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto out = from_bf16(d_out.download());
  const auto xf = from_bf16(x), ff = from_bf16(f);
  // X'_b = post_b·f + Σ_a C[a][b]·X_a (§3.2). Budget: 5 FP32 FMAs ≤ 6u of Σ|terms|, then BF16.
  std::vector<double> ref(out.size()), budget(out.size());
  for (int t = 0; t < c.tokens; ++t)
    for (int b = 0; b < kN; ++b)
      for (int d = 0; d < c.D; ++d) {
        double s = double(post[size_t(t) * kN + b]) * ff[size_t(t) * c.D + d];
        double sa = std::fabs(s);
        for (int a = 0; a < kN; ++a) {
          const double term = double(comb[(size_t(t) * kN + a) * kN + b]) * xf[size_t(t) * nD + size_t(a) * c.D + d];
          s += term;
          sa += std::fabs(term);
        }
        const size_t o = size_t(t) * nD + size_t(b) * c.D + d;
        ref[o] = s;
        budget[o] = kBf16HalfUlp * (std::fabs(s) + 6 * kF32Unit * sa) + 6 * kF32Unit * sa + 1e-30;
      }
  expect_parity(cat("mhc_post T=", c.tokens, " D=", c.D), out, ref, budget);

  // In place (out aliases x) gives the same bytes.
  p.out = bf16_ptr(d_x);
  launch_mhc_post(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto a = d_x.download(), b = d_out.download();
  EXPECT_TRUE(a == b) << "in-place HC_post differs from out-of-place";
}

// One HC_pre launch on the GPU: the inputs, the scratch and (optionally fused) outputs.
struct PreRun {
  DeviceBuffer<uint16_t> u;
  DeviceBuffer<float> post, comb;
  DeviceBuffer<uint8_t> q, qs;
  DeviceBuffer<uint16_t> fake;
};
PreRun run_pre(const DeviceBuffer<uint16_t>& d_x, const DeviceBuffer<float>& d_fn, const DeviceBuffer<float>& d_base,
               const DeviceBuffer<float>& d_scale, const __nv_bfloat16* norm_weight, bool quant, int tokens, int D,
               int64_t x_offset_tokens = 0) {
  PreRun r{DeviceBuffer<uint16_t>(size_t(tokens) * D), DeviceBuffer<float>(size_t(tokens) * kN),
           DeviceBuffer<float>(size_t(tokens) * kN * kN), DeviceBuffer<uint8_t>(quant ? size_t(tokens) * D : 0),
           DeviceBuffer<uint8_t>(quant ? size_t(tokens) * D / 128 : 0),
           DeviceBuffer<uint16_t>(quant ? size_t(tokens) * D : 0)};
  for (auto* b : {&r.post, &r.comb}) b->fill_bytes(kPoisonByte);
  r.u.fill_bytes(kPoisonByte);
  r.q.fill_bytes(kPoisonByte);
  r.qs.fill_bytes(kPoisonByte);
  r.fake.fill_bytes(kPoisonByte);
  DeviceBuffer<float> d_part(mhc_pre_partial_floats(tokens, D));
  MhcPreParams p;
  p.x = reinterpret_cast<const __nv_bfloat16*>(d_x.get()) + x_offset_tokens * kN * D;
  p.fn = d_fn.get();
  p.base = d_base.get();
  p.scale = d_scale.get();
  p.partial = d_part.get();
  p.u = bf16_ptr(r.u);
  p.post = r.post.get();
  p.comb = r.comb.get();
  p.norm_weight = norm_weight;
  p.q = quant ? r.q.get() : nullptr;
  p.q_scale = quant ? r.qs.get() : nullptr;
  p.fake = quant ? bf16_ptr(r.fake) : nullptr;
  p.n_tokens = tokens;
  p.D = D;
  p.sinkhorn_iters = kIters;
  p.hc_eps = float(kEps);
  p.rms_eps = float(kEps);
  launch_mhc_pre(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  return r;
}

// The fused attn_norm / ffn_norm (+ FP8 1×128) of the block input against the unfused u of the
// same inputs: post and comb byte-identical (the same code), y within the RMSNorm budget of the
// unfused u, q / q_scale / fake bit-exact from y (the quantiser must see the BF16 y it wrote).
TEST_P(MhcTest, FusedNormAndQuantMatchUnfused) {
  const auto c = GetParam();
  const bool quant = c.D % 128 == 0;
  const int nD = kN * c.D;
  const auto x = to_bf16(normals(size_t(c.tokens) * nD, 1.5f));
  const auto fn = normals(size_t(kHcMix) * nD, 1.0f / std::sqrt(float(nD)));
  const auto base = normals(kHcMix, 0.5f);
  const std::vector<float> scale = {uniform(0.5f, 2.0f), uniform(0.5f, 2.0f), uniform(0.5f, 4.0f)};
  const auto w = to_bf16(normals(size_t(c.D), 0.5f));
  DeviceBuffer<uint16_t> d_x(x), d_w(w);
  DeviceBuffer<float> d_fn(fn), d_base(base), d_scale(scale);
  const PreRun plain = run_pre(d_x, d_fn, d_base, d_scale, nullptr, false, c.tokens, c.D);
  const PreRun fused = run_pre(d_x, d_fn, d_base, d_scale, bf16_ptr(d_w), quant, c.tokens, c.D);
  EXPECT_TRUE(plain.post.download() == fused.post.download()) << "post differs when the norm is fused";
  EXPECT_TRUE(plain.comb.download() == fused.comb.download()) << "comb differs when the norm is fused";

  const auto u = from_bf16(plain.u.download()), y = from_bf16(fused.u.download()), wf = from_bf16(w);
  // Budget, as tests/cuda/rmsnorm.cpp: Σu² passes finish_sum_depth(D) FP32 adds, rsqrtf ≤ 2 ulp,
  // two products: relative δ ≤ (depth/2 + 6)·u, then BF16 rounding.
  const double delta = (finish_sum_depth(c.D) / 2 + 6) * kF32Unit;
  std::vector<double> ref(y.size()), budget(y.size());
  for (int t = 0; t < c.tokens; ++t) {
    double ss = 0;
    for (int i = 0; i < c.D; ++i) ss += double(u[size_t(t) * c.D + i]) * u[size_t(t) * c.D + i];
    const double inv = 1 / std::sqrt(ss / c.D + kEps);
    for (int i = 0; i < c.D; ++i) {
      const size_t k = size_t(t) * c.D + i;
      ref[k] = u[k] * inv * wf[size_t(i)];
      budget[k] = std::fabs(ref[k]) * (kBf16HalfUlp * (1 + delta) + delta) + 1e-30;
    }
  }
  expect_parity(cat("mhc_pre fused norm T=", c.tokens, " D=", c.D), y, ref, budget);
  if (!quant) return;
  const int nb = c.D / 128;
  std::vector<uint8_t> q_ref(y.size()), s_ref(size_t(c.tokens) * nb);
  std::vector<uint16_t> fake_ref(y.size());
  for (int t = 0; t < c.tokens; ++t)
    for (int b = 0; b < nb; ++b) {
      const float* blk = y.data() + size_t(t) * c.D + size_t(b) * 128;
      float amax = 0;
      for (int i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(blk[i]));
      const uint8_t sb = ue8m0_scale_for(amax, kE4M3Max, kActAmaxFloor);
      s_ref[size_t(t) * nb + b] = sb;
      for (int i = 0; i < 128; ++i) {
        const size_t k = size_t(t) * c.D + size_t(b) * 128 + i;
        q_ref[k] = f32_to_e4m3(blk[i] / e8m0_to_f32(sb));
        fake_ref[k] = f32_to_bf16(e4m3_to_f32(q_ref[k]) * e8m0_to_f32(sb));
      }
    }
  expect_bytes_equal(cat("mhc_pre fused q_scale T=", c.tokens, " D=", c.D), fused.qs.download(), s_ref);
  expect_bytes_equal(cat("mhc_pre fused q T=", c.tokens, " D=", c.D), fused.q.download(), q_ref);
  EXPECT_TRUE(fused.fake.download() == fake_ref) << "fake-quant BF16 values differ from q·s";
}

// HC_head with the final norm (§9) fused: against the double RMSNorm of the unfused h.
TEST_P(MhcTest, HeadFusedNormMatchesUnfused) {
  const auto c = GetParam();
  const int nD = kN * c.D;
  const auto x = to_bf16(normals(size_t(c.tokens) * nD, 1.5f));
  const auto fn = normals(size_t(kN) * nD, 1.0f / std::sqrt(float(nD)));
  const auto base = normals(kN, 0.5f);
  const std::vector<float> scale = {uniform(0.5f, 2.0f)};
  const auto w = to_bf16(normals(size_t(c.D), 0.5f));
  DeviceBuffer<uint16_t> d_x(x), d_w(w), d_h(size_t(c.tokens) * c.D), d_y(size_t(c.tokens) * c.D);
  DeviceBuffer<float> d_fn(fn), d_base(base), d_scale(scale), d_part(mhc_pre_partial_floats(c.tokens, c.D));
  d_h.fill_bytes(kPoisonByte);
  d_y.fill_bytes(kPoisonByte);
  MhcHeadParams p;
  p.x = bf16_ptr(d_x);
  p.fn = d_fn.get();
  p.base = d_base.get();
  p.scale = d_scale.get();
  p.partial = d_part.get();
  p.h = bf16_ptr(d_h);
  p.n_tokens = c.tokens;
  p.D = c.D;
  p.hc_eps = float(kEps);
  p.rms_eps = float(kEps);
  launch_mhc_head(p, nullptr);
  p.h = bf16_ptr(d_y);
  p.norm_weight = bf16_ptr(d_w);
  launch_mhc_head(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto h = from_bf16(d_h.download()), y = from_bf16(d_y.download()), wf = from_bf16(w);
  // Budget as FusedNormAndQuantMatchUnfused (the same collapse code).
  const double delta = (finish_sum_depth(c.D) / 2 + 6) * kF32Unit;
  std::vector<double> ref(y.size()), budget(y.size());
  for (int t = 0; t < c.tokens; ++t) {
    double ss = 0;
    for (int i = 0; i < c.D; ++i) ss += double(h[size_t(t) * c.D + i]) * h[size_t(t) * c.D + i];
    const double inv = 1 / std::sqrt(ss / c.D + kEps);
    for (int i = 0; i < c.D; ++i) {
      const size_t k = size_t(t) * c.D + i;
      ref[k] = h[k] * inv * wf[size_t(i)];
      budget[k] = std::fabs(ref[k]) * (kBf16HalfUlp * (1 + delta) + delta) + 1e-30;
    }
  }
  expect_parity(cat("mhc_head fused norm T=", c.tokens, " D=", c.D), y, ref, budget);
}

// A token's outputs do not depend on the batch it is in: tokens 0, T/2 and T−1 run alone give the
// same bytes as in the batch (the launch shape depends on D only).
TEST_P(MhcTest, BatchRowsEqualRowsAlone) {
  const auto c = GetParam();
  if (c.tokens < 2) {
    GTEST_SKIP() << "one token";
  }
  const int nD = kN * c.D;
  const auto x = to_bf16(normals(size_t(c.tokens) * nD, 1.5f));
  const auto fn = normals(size_t(kHcMix) * nD, 1.0f / std::sqrt(float(nD)));
  const auto base = normals(kHcMix, 0.5f);
  const std::vector<float> scale = {uniform(0.5f, 2.0f), uniform(0.5f, 2.0f), uniform(0.5f, 4.0f)};
  const auto w = to_bf16(normals(size_t(c.D), 0.5f));
  DeviceBuffer<uint16_t> d_x(x), d_w(w);
  DeviceBuffer<float> d_fn(fn), d_base(base), d_scale(scale);
  const bool quant = c.D % 128 == 0;
  const PreRun all = run_pre(d_x, d_fn, d_base, d_scale, bf16_ptr(d_w), quant, c.tokens, c.D);
  const auto u_all = all.u.download();
  const auto post_all = all.post.download(), comb_all = all.comb.download();
  const auto q_all = all.q.download();
  for (const int t : {0, c.tokens / 2, c.tokens - 1}) {
    const PreRun one = run_pre(d_x, d_fn, d_base, d_scale, bf16_ptr(d_w), quant, 1, c.D, t);
    EXPECT_EQ(std::memcmp(one.u.download().data(), u_all.data() + size_t(t) * c.D, size_t(c.D) * 2), 0) << "u of token " << t;
    EXPECT_EQ(std::memcmp(one.post.download().data(), post_all.data() + size_t(t) * kN, kN * 4), 0) << "post of token " << t;
    EXPECT_EQ(std::memcmp(one.comb.download().data(), comb_all.data() + size_t(t) * kN * kN, kN * kN * 4), 0)
        << "comb of token " << t;
    if (quant) {
      EXPECT_EQ(std::memcmp(one.q.download().data(), q_all.data() + size_t(t) * c.D, size_t(c.D)), 0) << "q of token " << t;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, MhcTest,
                         ::testing::Values(MhcCase{1, 4096},     // Flash decode
                                           MhcCase{3, 7168},     // Pro
                                           MhcCase{7, 256},      // tiny config (§15.1)
                                           MhcCase{2, 64},       // one split
                                           MhcCase{7, 4096},     // a verify / small batch
                                           MhcCase{128, 4096},   // a prefill chunk: 4 token tiles
                                           MhcCase{2048, 4096},  // a prefill pass
                                           MhcCase{33, 128}));   // a partial token tile, D = one quant block

// The CPU backend's HC_pre (src/cpu/mhc.cpp, FP32, the engine's executable specification) on the
// same BF16 streams. Budget per output: this file's double-reference budget for the GPU plus the
// CPU's own FP32 error: its projection (cpu/linear.cpp) sums 16 lanes of n·D/16 products each and
// then the 16 lanes, after rounding v̂ = v·r to FP32: |Δm| ≤ (n·D/16 + 20)·u·Σ|fn·v|·r + 4u|m|,
// at most dm_max·(n·D/16 + 20)/(n_splits + 16) of this file's GPU bound. The CPU's u stays FP32,
// so the GPU's BF16 rounding of u is in the GPU term. The Sinkhorn terms use 2× the GPU's FP32
// allowance (two implementations' roundings).
TEST_P(MhcTest, MatchesCpuBackend) {
  const auto c = GetParam();
  const int nD = kN * c.D, n_splits = nD / kMhcSplit;
  const auto x = to_bf16(normals(size_t(c.tokens) * nD, 1.5f));
  const auto fn = normals(size_t(kHcMix) * nD, 1.0f / std::sqrt(float(nD)));
  const auto base = normals(kHcMix, 0.5f);
  const std::vector<float> scale = {uniform(0.5f, 2.0f), uniform(0.5f, 2.0f), uniform(0.5f, 4.0f)};
  DeviceBuffer<uint16_t> d_x(x);
  DeviceBuffer<float> d_fn(fn), d_base(base), d_scale(scale);
  const PreRun gpu = run_pre(d_x, d_fn, d_base, d_scale, nullptr, false, c.tokens, c.D);
  const auto u = from_bf16(gpu.u.download());
  const auto post = gpu.post.download(), comb = gpu.comb.download();

  ModelConfig cfg;
  cfg.hidden_size = c.D;
  cfg.hc_mult = kN;
  cfg.hc_sinkhorn_iters = kIters;
  cfg.hc_eps = kEps;
  cfg.rms_norm_eps = kEps;
  ThreadPool pool(0);
  const CpuContext ctx{cfg, {}, pool, nullptr};
  WeightMatrix wfn, wbase, wscale;
  wfn.name = "hc.fn";
  wfn.rows = kHcMix;
  wfn.cols = nD;
  wfn.data = reinterpret_cast<const uint8_t*>(fn.data());
  wbase.name = "hc.base";
  wbase.rows = 1;
  wbase.cols = kHcMix;
  wbase.data = reinterpret_cast<const uint8_t*>(base.data());
  wscale.name = "hc.scale";
  wscale.rows = 1;
  wscale.cols = 3;
  wscale.data = reinterpret_cast<const uint8_t*>(scale.data());
  const auto xf = from_bf16(x);
  std::vector<float> u_cpu(size_t(c.tokens) * c.D);
  HcMix mix;
  hc_pre(ctx, HyperConnWeights{wfn, wbase, wscale}, xf.data(), c.tokens, u_cpu.data(), &mix);

  std::vector<double> post_ref, post_b, comb_ref, comb_b, u_ref, u_b;
  for (int t = 0; t < c.tokens; ++t) {
    const HcRef r = hc_pre_ref(xf.data() + size_t(t) * nD, fn, base, scale, c.D, n_splits);
    const double dm = r.dm_max * (1 + (nD / 16.0 + 20) / (n_splits + 16));
    for (int j = 0; j < kN; ++j) {
      post_ref.push_back(mix.post[size_t(t) * kN + j]);
      post_b.push_back(scale[1] * dm / 2 + 16 * kF32Unit);
    }
    for (int k = 0; k < kN * kN; ++k) {
      const double cv = mix.comb[size_t(t) * kN * kN + k];
      comb_ref.push_back(cv);
      comb_b.push_back(cv * (4 * scale[2] * dm + 512 * kF32Unit) + 1e-12);
    }
    const double dpre = scale[0] * dm / 4 + 16 * kF32Unit;
    for (int d = 0; d < c.D; ++d) {
      double sa = 0, sx = 0;
      for (int j = 0; j < kN; ++j) {
        const double xv = xf[size_t(t) * nD + size_t(j) * c.D + d];
        sa += std::fabs(r.pre[j] * xv);
        sx += std::fabs(xv);
      }
      const double cpu = u_cpu[size_t(t) * c.D + d];
      u_ref.push_back(cpu);
      const double fp32 = dpre * sx + 8 * kF32Unit * sa;
      u_b.push_back(kBf16HalfUlp * (std::fabs(cpu) + fp32) + fp32 + 1e-30);
    }
  }
  expect_parity(cat("mhc_pre vs cpu post T=", c.tokens, " D=", c.D), post, post_ref, post_b);
  expect_parity(cat("mhc_pre vs cpu comb T=", c.tokens, " D=", c.D), comb, comb_ref, comb_b);
  expect_parity(cat("mhc_pre vs cpu u T=", c.tokens, " D=", c.D), u, u_ref, u_b);
}

}  // namespace
}  // namespace dsv4::cuda::test
