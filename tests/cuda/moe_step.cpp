// The routed MoE end to end: moe_step.cpp's moe_routed (what moe_step runs after the router and
// the shared expert — dispatch plan, grouped w1/w3, SwiGLU × weight + FP8, grouped w2, combine)
// on random nano- and Flash-shaped layers, MXFP4 and NVFP4, score and hash routing, padding rows:
//  1. stage by stage against the specification, on the pipeline's own device intermediates: the
//     plan exactly; w1/w3 and w2 within derived budgets of a double product of the scalar
//     dequantisation; h within the SwiGLU budget and its FP8 quantisation bitwise; the combine
//     bitwise (FP32 sum in expert-id order + shared, BF16);
//  2. against the old per-selection path (one gemv_mxfp4 per (row, pick)): every routed output
//     within both paths' GEMM budgets plus the exact effect of the h elements the two paths
//     round to different FP8 values, and the layer output within the sum of those;
//  3. a second run and a CUDA-graph replay on new picks: bit-identical to eager runs.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "cuda/device_model.h"
#include "cuda/kernels/gemv_mxfp4.cuh"
#include "cuda/kernels/moe_combine.cuh"
#include "cuda/kernels/moe_grouped_gemm.cuh"
#include "cuda/kernels/router.cuh"
#include "cuda/kernels/swiglu.cuh"
#include "cuda/moe_step.h"
#include "moe_fixtures.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

using Fmt = ExpertWeightFormat;

struct RoutedCase {
  const char* name;
  Fmt fmt;
  int E, D, I, T, k;
  int n_real;  // < 0: all rows real (n_real pointer null)
  bool hash;   // hash routing (tid2eid with repeated experts in a row) instead of biased top-k
};

DeviceExperts to_device(ExpertTensor& t) {
  DeviceExperts d;
  d.format = t.fmt == Fmt::kNVFP4 ? DeviceExperts::Format::kNVFP4 : DeviceExperts::Format::kMXFP4;
  d.E = t.E;
  d.N = t.N;
  d.K = t.K;
  d.data = std::move(t.dw);
  d.scale = std::move(t.ds);
  d.global_scale = std::move(t.dgs);
  return d;
}

template <typename T>
std::vector<T> down(const T* d, size_t n) {
  std::vector<T> h(n);
  if (n) DSV4_CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}
std::vector<float> down_bf16(const __nv_bfloat16* d, size_t n) {
  return from_bf16(down(reinterpret_cast<const uint16_t*>(d), n));
}

// FP8 1×128 quantisation of rows of floats (§12, the reference's act_quant): q, scale bytes.
void quantize_rows(const std::vector<float>& x, int K, std::vector<uint8_t>& q, std::vector<uint8_t>& s) {
  q.resize(x.size());
  s.resize(x.size() / kActBlockSize);
  for (size_t b = 0; b < s.size(); ++b) {
    float amax = 0;
    for (int i = 0; i < kActBlockSize; ++i) amax = std::max(amax, std::fabs(x[b * kActBlockSize + i]));
    s[b] = ue8m0_scale_for(amax, kE4M3Max, kActAmaxFloor);
    for (int i = 0; i < kActBlockSize; ++i) q[b * kActBlockSize + i] = f32_to_e4m3(x[b * kActBlockSize + i] / e8m0_to_f32(s[b]));
  }
  (void)K;
}
double deq(const std::vector<uint8_t>& q, const std::vector<uint8_t>& s, size_t i) {
  return double(e4m3_to_f32(q[i])) * e8m0_to_f32(s[i / kActBlockSize]);
}

class MoeRoutedTest : public CudaOpTest, public ::testing::WithParamInterface<RoutedCase> {};

TEST_P(MoeRoutedTest, MatchesSpecificationAndOldPath) {
  const RoutedCase& c = GetParam();
  const bool nv = c.fmt == Fmt::kNVFP4;
  const int E = c.E, D = c.D, I = c.I, T = c.T, k = c.k, n = T * k;
  const int n_real = c.n_real < 0 ? T : c.n_real;
  ModelConfig cfg;
  cfg.hidden_size = D;
  cfg.moe_intermediate_size = I;
  cfg.n_routed_experts = E;
  cfg.num_experts_per_tok = k;
  cfg.swiglu_limit = 10.0;
  cfg.routed_scaling_factor = 1.5;
  cfg.expert_format = nv ? ExpertFormat::kNVFP4 : ExpertFormat::kMXFP4;

  // Weights of realistic size: |w| ~ 3·2^-5, so g, v and y stay of order one (the clamp still
  // fires on a few). MXFP4 scales 2^-5 ± 2 binades; NVFP4 E4M3 scales in [0.5, 2) × 2^-5.
  ExpertTensor t1, t3, t2;
  const auto global = [] { return 0x1p-5f; };
  const auto nv_scale = [](uint8_t r) { return uint8_t(0x30 + r % 16); };  // 0.5 .. 1.875
  for (auto* t : {&t1, &t3, &t2}) {
    const int N = t == &t2 ? D : I, K = t == &t2 ? I : D;
    if (nv)
      t->make(c.fmt, E, N, K, rng(), nv_scale, global);
    else
      t->make(c.fmt, E, N, K, rng(), ExpertTensor::ue8m0_around(-5, 2), global);
  }
  // Host views survive the move of the device buffers into DeviceExperts.
  DeviceExperts w1 = to_device(t1), w3 = to_device(t3), w2 = to_device(t2);

  // Activations x ~ N(0, 1), quantised as §12; router logits, bias or hash table; shared output.
  const auto xf = normals(size_t(T) * D);
  std::vector<uint8_t> xq, xs;
  quantize_rows(xf, D, xq, xs);
  const auto shared = to_bf16(normals(size_t(T) * D));
  const int vocab = 64;
  std::vector<int32_t> tid2eid(size_t(vocab) * k), tokens(static_cast<size_t>(T));
  for (auto& e : tid2eid) e = uniform_int(0, E - 1);  // repeats inside a row happen
  for (auto& t : tokens) t = uniform_int(0, vocab - 1);
  DeviceBuffer<uint8_t> d_xq(xq), d_xs(xs);
  DeviceBuffer<uint16_t> d_shared(shared), d_out(size_t(T) * D), d_out2(size_t(T) * D), d_out_old(size_t(T) * D);
  DeviceBuffer<float> d_logits(normals(size_t(T) * E)), d_bias(normals(size_t(E), 0.5f)), d_w(static_cast<size_t>(n));
  DeviceBuffer<int32_t> d_idx(static_cast<size_t>(n)), d_tid(tid2eid), d_tok(tokens), d_nreal(std::vector<int32_t>{n_real});
  cudaStream_t stream;
  DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const auto route = [&] {
    RouterParams rp;
    rp.logits = d_logits.get();
    rp.bias = c.hash ? nullptr : d_bias.get();
    rp.tid2eid = c.hash ? d_tid.get() : nullptr;
    rp.token_ids = c.hash ? d_tok.get() : nullptr;
    rp.expert_idx = d_idx.get();
    rp.expert_weight = d_w.get();
    rp.n_tokens = T;
    rp.E = E;
    rp.k = k;
    rp.vocab = vocab;
    rp.route_scale = float(cfg.routed_scaling_factor);
    launch_router(rp, stream);
  };

  DeviceArena counting;
  const MoeScratch sizing(cfg, T, counting);  // counts the bytes only
  DeviceArena arena(counting.used());
  MoeScratch ms(cfg, T, arena);
  DSV4_CUDA_CHECK(cudaMemset(ms.expert_idx, kPoisonByte, counting.used()));  // all of it: the first carve
  MoeRoutedInput in;
  in.x_q = d_xq.get();
  in.x_scale = d_xs.get();
  in.expert_idx = d_idx.get();
  in.expert_w = d_w.get();
  in.n_real = c.n_real < 0 ? nullptr : d_nreal.get();
  in.shared = bf16_ptr(d_shared);
  in.out = bf16_ptr(d_out);
  in.T = T;
  route();
  moe_routed(cfg, w1, w3, w2, ms, in, stream);
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));

  // ---- 1. stage by stage ----
  const auto idx = down(d_idx.get(), size_t(n));
  const auto wts = down(d_w.get(), size_t(n));
  const HostPlan hp = host_plan(idx, T, k, n_real, E);
  const int n_sel = hp.n_sel();
  ASSERT_EQ(down(ms.plan.offsets, size_t(E) + 1), hp.offsets) << "plan offsets";
  ASSERT_EQ(down(ms.plan.pos_of, size_t(n)), hp.pos_of) << "plan pos_of";
  ASSERT_EQ(down(ms.plan.sel_row, size_t(n_sel)), hp.sel_row) << "plan sel_row";
  const auto sel_w = down(ms.plan.sel_weight, size_t(n_sel));
  for (int j = 0; j < n_sel; ++j)
    ASSERT_EQ(sel_w[size_t(j)], wts[size_t(hp.sel_row[size_t(j)]) * k + hp.sel_slot[size_t(j)]]) << "sel_weight " << j;

  const auto g = down_bf16(ms.g, size_t(n_sel) * I), up = down_bf16(ms.up, size_t(n_sel) * I);
  const auto h = down_bf16(ms.h, size_t(n_sel) * I);
  const auto hq = down(ms.hq, size_t(n_sel) * I), hqs = down(ms.hqs, size_t(n_sel) * I / kActBlockSize);
  const auto y = down_bf16(ms.y, size_t(n_sel) * D);
  const auto out = down(reinterpret_cast<const uint16_t*>(in.out), size_t(T) * D);

  // GEMM budgets (moe_grouped_gemm.cuh; derivation in tests/cuda/moe_grouped_gemm.cpp), u = 2^-24:
  // MXFP4 (76 + K/128)·u·S, NVFP4 (290 + K/128)·u·S, S = Σ|w·x|; then one BF16 rounding.
  const auto gamma_grouped = [&](int K) { return (nv ? 290.0 : 76.0) * kF32Unit + K / 128 * kF32Unit; };
  std::vector<float> wrow(size_t(std::max(D, I)));
  {
    std::vector<float> got;
    std::vector<double> ref, budget;
    for (int m = 0; m < 2; ++m)
      for (int j = 0; j < n_sel; ++j) {
        const WeightMatrix wm = (m == 0 ? t1 : t3).view(hp.expert_of(j));
        const int row = hp.sel_row[size_t(j)];
        for (int o = 0; o < I; ++o) {
          wm.dequant_rows(o, 1, wrow.data());
          double acc = 0, sa = 0;
          for (int d = 0; d < D; ++d) {
            const double p = wrow[size_t(d)] * deq(xq, xs, size_t(row) * D + d);
            acc += p;
            sa += std::fabs(p);
          }
          got.push_back((m == 0 ? g : up)[size_t(j) * I + o]);
          ref.push_back(acc);
          budget.push_back(gamma_grouped(D) * sa * (1 + kBf16HalfUlp) + kBf16HalfUlp * std::fabs(acc) + 1e-30);
        }
      }
    expect_parity(cat("moe_routed w1|w3 ", c.name), got, ref, budget);
  }
  {  // h: clamped SwiGLU × routing weight (budget as tests/cuda/swiglu.cpp), then FP8 bitwise
    std::vector<float> got;
    std::vector<double> ref, budget;
    std::vector<uint8_t> q_ref, s_ref;
    for (int j = 0; j < n_sel; ++j)
      for (int o = 0; o < I; ++o) {
        const size_t at = size_t(j) * I + o;
        const double gc = std::min<double>(g[at], 10.0), vc = std::clamp<double>(up[at], -10.0, 10.0);
        const double r = gc / (1 + std::exp(-gc)) * vc * sel_w[size_t(j)];
        got.push_back(h[at]);
        ref.push_back(r);
        budget.push_back(std::fabs(r) * (kBf16HalfUlp * (1 + 8 * kF32Unit) + 8 * kF32Unit) + 1e-30);
      }
    expect_parity(cat("moe_routed h ", c.name), got, ref, budget);
    quantize_rows(h, I, q_ref, s_ref);
    expect_bytes_equal(cat("moe_routed hq ", c.name), hq, q_ref);
    expect_bytes_equal(cat("moe_routed hq scale ", c.name), hqs, s_ref);
  }
  std::vector<double> s2_new(size_t(n_sel) * D);  // Σ|w2·h| per routed output (for step 2)
  {
    std::vector<float> got;
    std::vector<double> ref, budget;
    for (int j = 0; j < n_sel; ++j) {
      const WeightMatrix wm = t2.view(hp.expert_of(j));
      for (int o = 0; o < D; ++o) {
        wm.dequant_rows(o, 1, wrow.data());
        double acc = 0, sa = 0;
        for (int i = 0; i < I; ++i) {
          const double p = wrow[size_t(i)] * deq(hq, hqs, size_t(j) * I + i);
          acc += p;
          sa += std::fabs(p);
        }
        s2_new[size_t(j) * D + o] = sa;
        got.push_back(y[size_t(j) * D + o]);
        ref.push_back(acc);
        budget.push_back(gamma_grouped(I) * sa * (1 + kBf16HalfUlp) + kBf16HalfUlp * std::fabs(acc) + 1e-30);
      }
    }
    expect_parity(cat("moe_routed w2 ", c.name), got, ref, budget);
  }
  {  // combine: bitwise
    std::vector<uint16_t> ref(size_t(T) * D);
    for (int t = 0; t < T; ++t) {
      std::vector<int> order(static_cast<size_t>(k));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return idx[size_t(t) * k + a] < idx[size_t(t) * k + b]; });
      for (int d = 0; d < D; ++d) {
        float acc = 0.0f;
        if (t < n_real)
          for (int i : order) acc += y[size_t(hp.pos_of[size_t(t) * k + i]) * D + d];
        acc += bf16_to_f32(shared[size_t(t) * D + d]);
        ref[size_t(t) * D + d] = f32_to_bf16(acc);
      }
    }
    std::vector<uint8_t> a(out.size() * 2), b(ref.size() * 2);
    std::memcpy(a.data(), out.data(), a.size());
    std::memcpy(b.data(), ref.data(), b.size());
    expect_bytes_equal(cat("moe_routed out ", c.name), a, b);
  }

  // ---- 2. the old per-selection path on the same picks ----
  DeviceBuffer<uint16_t> g_old(size_t(n) * I), up_old(size_t(n) * I), h_old(size_t(n) * I), y_old(size_t(n) * D);
  DeviceBuffer<uint8_t> hq_old(size_t(n) * I), hqs_old(size_t(n) * I / kActBlockSize);
  const auto gemv = [&](const DeviceExperts& w, const uint8_t* x, const uint8_t* x_s, int per_x, DeviceBuffer<uint16_t>& out_buf) {
    GemvMxfp4Params p;
    p.format = c.fmt;
    p.w = w.data.get();
    p.w_scale = w.scale.get();
    p.global_scale = w.global_scale.get();
    p.expert_idx = d_idx.get();
    p.x = x;
    p.x_scale = x_s;
    p.sel_per_x = per_x;
    p.y = out_buf.get();
    p.out_bf16 = true;
    p.n_sel = n;
    p.n_experts = E;
    p.N = w.N;
    p.K = w.K;
    launch_gemv_mxfp4(p, stream);
  };
  gemv(w1, d_xq.get(), d_xs.get(), k, g_old);
  gemv(w3, d_xq.get(), d_xs.get(), k, up_old);
  SwigluParams sp;
  sp.gate = bf16_ptr(g_old);
  sp.up = bf16_ptr(up_old);
  sp.row_weight = d_w.get();
  sp.h = bf16_ptr(h_old);
  sp.q = hq_old.get();
  sp.q_scale = hqs_old.get();
  sp.n_rows = n;
  sp.I = I;
  sp.limit = 10.0f;
  launch_swiglu(sp, stream);
  gemv(w2, hq_old.get(), hqs_old.get(), 1, y_old);
  MoeCombineParams mp;
  mp.routed = bf16_ptr(y_old);
  mp.shared = bf16_ptr(d_shared);
  mp.out = bf16_ptr(d_out_old);
  mp.expert_ids = d_idx.get();
  mp.n_real = in.n_real;
  mp.T = T;
  mp.k = k;
  mp.D = D;
  launch_moe_combine(mp, stream);
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
  const auto hq_o = hq_old.download(), hqs_o = hqs_old.download();
  const auto y_o = from_bf16(y_old.download()), out_o = from_bf16(d_out_old.download());
  // Bound per routed output: |Σ w2·(h_new − h_old)| (exact, from the two paths' FP8 h) + each
  // path's GEMM budget (old: gemv_mxfp4's (64 + K/16)·u (+2u NVFP4), tests/cuda/gemv_mxfp4.cpp)
  // + both BF16 roundings.
  const double gamma_old = (64 + I / 16.0 + (nv ? 2 : 0)) * kF32Unit;
  int64_t h_flips = 0;
  std::vector<double> bound_y(size_t(n_sel) * D);
  {
    std::vector<float> got;
    std::vector<double> ref, budget;
    for (int j = 0; j < n_sel; ++j) {
      const size_t s = size_t(hp.sel_row[size_t(j)]) * k + hp.sel_slot[size_t(j)];
      std::vector<double> dh(static_cast<size_t>(I));
      std::vector<int> flipped;
      for (int i = 0; i < I; ++i) {
        dh[size_t(i)] = deq(hq, hqs, size_t(j) * I + i) - deq(hq_o, hqs_o, s * I + i);
        if (dh[size_t(i)] != 0) flipped.push_back(i);
      }
      h_flips += int64_t(flipped.size());
      const WeightMatrix wm = t2.view(hp.expert_of(j));
      for (int o = 0; o < D; ++o) {
        wm.dequant_rows(o, 1, wrow.data());
        double flip = 0, s_old = 0;
        for (int i : flipped) flip += wrow[size_t(i)] * dh[size_t(i)];
        for (int i = 0; i < I; ++i) s_old += std::fabs(wrow[size_t(i)] * deq(hq_o, hqs_o, s * I + i));
        const double yn = y[size_t(j) * D + o], yo = y_o[s * D + o];
        const double b = std::fabs(flip) + gamma_grouped(I) * s2_new[size_t(j) * D + o] + gamma_old * s_old +
                         kBf16HalfUlp * (1 + 2 * kBf16HalfUlp) * (std::fabs(yn) + std::fabs(yo)) + 1e-30;
        bound_y[size_t(j) * D + o] = b;
        got.push_back(float(yn));
        ref.push_back(yo);
        budget.push_back(b);
      }
    }
    std::printf("[info]   %s: %lld of %lld h elements round to another FP8 value on the two paths\n", c.name,
                (long long)h_flips, (long long)n_sel * I);
    expect_parity(cat("moe_routed w2 vs old path ", c.name), got, ref, budget);
  }
  {  // the layer output: within Σ_i of the routed bounds + the k + 1 FP32 additions + two BF16 roundings
    std::vector<float> got;
    std::vector<double> ref, budget;
    for (int t = 0; t < T; ++t)
      for (int d = 0; d < D; ++d) {
        double b = 0, mag = std::fabs(bf16_to_f32(shared[size_t(t) * D + d]));
        if (t < n_real)
          for (int i = 0; i < k; ++i) {
            const size_t j = size_t(hp.pos_of[size_t(t) * k + i]);
            b += bound_y[j * D + d];
            mag += std::fabs(y[j * D + d]) + bound_y[j * D + d];
          }
        const double on = bf16_to_f32(out[size_t(t) * D + d]), oo = out_o[size_t(t) * D + d];
        got.push_back(float(on));
        ref.push_back(oo);
        budget.push_back(b + 2 * (k + 1) * kF32Unit * mag + kBf16HalfUlp * (1 + 2 * kBf16HalfUlp) * (std::fabs(on) + std::fabs(oo)) + 1e-30);
      }
    expect_parity(cat("moe_routed out vs old path ", c.name), got, ref, budget);
  }

  // ---- 3. determinism: a second eager run, and a graph replay on new picks ----
  in.out = bf16_ptr(d_out2);
  moe_routed(cfg, w1, w3, w2, ms, in, stream);
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
  EXPECT_EQ(d_out2.download(), out) << "a second run differs";
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  DSV4_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  route();
  moe_routed(cfg, w1, w3, w2, ms, in, stream);
  DSV4_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  DSV4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  d_logits.upload(normals(size_t(T) * E));  // new picks (score routing; hash: new tokens)
  tokens.assign(tokens.size(), 0);
  for (auto& t : tokens) t = uniform_int(0, vocab - 1);
  d_tok.upload(tokens);
  DSV4_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
  const auto out_graph = d_out2.download();
  in.out = bf16_ptr(d_out);
  route();
  moe_routed(cfg, w1, w3, w2, ms, in, stream);
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
  EXPECT_EQ(out_graph, d_out.download()) << "graph replay on new picks differs from an eager run";
  EXPECT_NE(out_graph, out) << "the new picks changed nothing (the replay may have reused the old plan)";
  DSV4_CUDA_CHECK(cudaGraphExecDestroy(exec));
  DSV4_CUDA_CHECK(cudaGraphDestroy(graph));
  DSV4_CUDA_CHECK(cudaStreamDestroy(stream));
}

INSTANTIATE_TEST_SUITE_P(
    Layers, MoeRoutedTest,
    ::testing::Values(
        // name, fmt, E, D, I, T, k, n_real, hash
        RoutedCase{"nano_mxfp4", Fmt::kMXFP4, 16, 256, 128, 40, 4, 33, false},
        RoutedCase{"nano_nvfp4", Fmt::kNVFP4, 16, 256, 128, 40, 4, -1, false},
        RoutedCase{"nano_hash", Fmt::kMXFP4, 16, 256, 128, 64, 4, 60, true},
        RoutedCase{"prefill_shape", Fmt::kMXFP4, 16, 256, 128, 300, 4, -1, false},
        RoutedCase{"prefill_shape_nvfp4", Fmt::kNVFP4, 16, 256, 128, 300, 4, 290, false},
        RoutedCase{"flash_dims", Fmt::kMXFP4, 32, 4096, 2048, 3, 6, -1, false}),
    [](const ::testing::TestParamInfo<RoutedCase>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace dsv4::cuda::test
