// MoE (§8). s = sqrt(softplus(x·gateᵀ)); selection: tid2eid[token] (hash layers) or
// top-k(s + bias) (bias only selects); w_i = s_i / Σ s · routed_scaling_factor. Expert:
// g = min(x·w1ᵀ, L), v = clamp(x·w3ᵀ, −L, L), h = silu(g)·v, y = h·w2ᵀ; the routing weight
// multiplies y (exact, as HF) or h before w2 (official, §8.2). Tokens are grouped per expert so
// each expert's weights are expanded once per call.
#include "cpu/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "cpu/linear.h"
#include "model/quant.h"
#include "util/error.h"

namespace dsv4 {

namespace {

float softplus(float v) { return v > 20.0f ? v : std::log1p(std::exp(v)); }  // torch's threshold
float silu(float v) { return v / (1.0f + std::exp(-v)); }

}  // namespace

void expert_act_quant(const CpuContext& ctx, float* x, int64_t n, int64_t K) {
  if (!ctx.numerics.act_fp8) return;
  for (int64_t r = 0; r < n; ++r) fp8_roundtrip_blocks(x + r * K, K, kActBlockSize);  // linear_rows' kFp8 point
}

void expert_hidden(const CpuContext& ctx, const ExpertWeights& e, const float* xq, int64_t n, const float* row_weight,
                   int64_t i0, int64_t ni, float* h) {
  const int64_t I = e.w1.rows;
  const float L = float(ctx.cfg.swiglu_limit);
  std::vector<float> g(size_t(n * ni)), v(size_t(n * ni));
  linear_rows(ctx, xq, n, e.w1, i0, ni, g.data());
  linear_rows(ctx, xq, n, e.w3, i0, ni, v.data());
  ctx.bf16(g.data(), n * ni);  // official-bf16: w1, w3, h and w2 outputs are BF16 tensors
  ctx.bf16(v.data(), n * ni);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < ni; ++i) {
      const size_t k = size_t(r * ni + i);
      float hv = silu(std::min(g[k], L)) * std::clamp(v[k], -L, L);
      if (row_weight) hv *= row_weight[r];
      h[r * I + i0 + i] = ctx.numerics.bf16_act ? round_bf16(hv) : hv;
    }
}

void expert_output(const CpuContext& ctx, const ExpertWeights& e, const float* hq, int64_t n, int64_t d0, int64_t nd,
                   float* y) {
  const int64_t D = e.w2.rows;
  std::vector<float> part(size_t(n * nd));
  linear_rows(ctx, hq, n, e.w2, d0, nd, part.data());
  ctx.bf16(part.data(), n * nd);
  for (int64_t r = 0; r < n; ++r) std::copy_n(part.data() + r * nd, nd, y + r * D + d0);
}

void expert_forward(const CpuContext& ctx, const ExpertWeights& e, const float* xs, int64_t n,
                    const float* row_weight, float* y) {
  std::vector<float> xq(xs, xs + n * e.w1.cols), h(size_t(n * e.w1.rows));
  expert_act_quant(ctx, xq.data(), n, e.w1.cols);
  expert_hidden(ctx, e, xq.data(), n, row_weight, 0, e.w1.rows, h.data());
  expert_act_quant(ctx, h.data(), n, e.w1.rows);
  expert_output(ctx, e, h.data(), n, 0, e.w2.rows, y);
}

void moe_forward(const CpuContext& ctx, const MoEWeights& w, const LayerSpec& spec, int layer,
                 const float* x, const int32_t* tokens, int64_t T, float* out) {
  const ModelConfig& cfg = ctx.cfg;
  const int64_t D = cfg.hidden_size, E = cfg.n_routed_experts, k = cfg.num_experts_per_tok;
  std::vector<float> s(size_t(T * E));
  linear(ctx, x, T, w.gate, s.data());  // §8.1: FP32 router logits
  for (float& v : s) v = std::sqrt(softplus(v));

  std::vector<int32_t> idx(size_t(T * k));
  std::vector<float> wt(size_t(T * k));
  std::vector<float> bias;
  if (spec.routing == RoutingType::kScore) bias = load_vector(w.gate_bias);
  std::vector<int32_t> order(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const float* st = s.data() + t * E;
    int32_t* it = idx.data() + t * k;
    if (spec.routing == RoutingType::kHash) {
      for (int64_t i = 0; i < k; ++i) {
        const int64_t e = w.tid2eid.int_at(tokens[t], i);
        if (e < 0 || e >= E)
          fail(w.tid2eid.name, ": tid2eid[", tokens[t], "][", i, "] = ", e,
               " is not an expert id (n_routed_experts = ", E, ")");
        it[i] = int32_t(e);
      }
    } else {
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
        const float va = st[a] + bias[size_t(a)], vb = st[b] + bias[size_t(b)];
        return va > vb || (va == vb && a < b);
      });
      std::copy(order.begin(), order.begin() + k, it);
    }
    float sum = 0.0f;
    for (int64_t i = 0; i < k; ++i) sum += st[it[i]];
    for (int64_t i = 0; i < k; ++i)
      wt[size_t(t * k + i)] = st[it[i]] / sum * float(cfg.routed_scaling_factor);
  }
  if (ctx.trace && *ctx.trace) {
    std::vector<float> fi(idx.begin(), idx.end());
    ctx.emit("moe.experts", layer, fi.data(), {T, k});
    ctx.emit("moe.weights", layer, wt.data(), {T, k});
  }

  // Shared expert (§8.3), then routed experts accumulated per token in FP32 (§8.4). Official-bf16
  // sums as the reference does, routed experts (ascending id) first, then the shared expert, and
  // stores the sum as BF16.
  const bool bf16 = ctx.numerics.bf16_act;
  std::vector<float> shared(bf16 ? size_t(T * D) : 0);
  expert_forward(ctx, w.shared, x, T, nullptr, bf16 ? shared.data() : out);
  if (bf16) std::fill(out, out + T * D, 0.0f);
  std::vector<float> xs, ws, ys;
  std::vector<int64_t> rows;
  for (int64_t e = 0; e < E; ++e) {
    rows.clear();
    ws.clear();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < k; ++i)
        if (idx[size_t(t * k + i)] == e) {
          rows.push_back(t);
          ws.push_back(wt[size_t(t * k + i)]);
        }
    if (rows.empty()) continue;
    const int64_t n = int64_t(rows.size());
    xs.resize(size_t(n * D));
    for (int64_t r = 0; r < n; ++r) std::copy(x + rows[r] * D, x + (rows[r] + 1) * D, xs.begin() + r * D);
    ys.resize(size_t(n * D));
    const bool before = ctx.numerics.route_before_w2;
    expert_forward(ctx, w.experts[size_t(e)], xs.data(), n, before ? ws.data() : nullptr, ys.data());
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < D; ++c)
        out[rows[r] * D + c] += before ? ys[size_t(r * D + c)] : ys[size_t(r * D + c)] * ws[size_t(r)];
  }
  if (bf16) {
    for (int64_t i = 0; i < T * D; ++i) out[i] += shared[size_t(i)];
    ctx.bf16(out, T * D);
  }
  ctx.emit("moe.out", layer, out, {T, D});
}

}  // namespace dsv4
