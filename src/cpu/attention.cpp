// Attention (§4, §7). Per query t and head h over the key set K_t (window positions
// max(0, t−W+1) … t, then compressed entries):
//   ℓ_s = (q_h · kv_s) / sqrt(d);  o_h = Σ_s exp(ℓ_s − μ) kv_s / (Σ_s exp(ℓ_s − μ) + exp(sink_h − μ))
// (K = V; the sink only enters the denominator, unscaled, §4.3), then inverse RoPE at t.
#include "cpu/attention.h"

#include <cmath>

#include "cpu/indexer.h"
#include "cpu/linear.h"
#include "cpu/serial_dots.h"
#include "util/error.h"

namespace dsv4 {

void kv_fake_quant(const ModelConfig& cfg, float* kv) {
  fp8_roundtrip_blocks(kv, cfg.nope_dim(), kKvQuantBlock);  // §12: RoPE dims stay unquantised
}

void attention_forward(const CpuContext& ctx, const AttentionWeights& w, const LayerSpec& spec,
                       int layer, const RopeTable& rope, const float* x, int64_t T, int64_t pos0,
                       AttentionState& st, float* out) {
  const ModelConfig& cfg = ctx.cfg;
  const int64_t D = cfg.hidden_size, H = cfg.num_attention_heads, d = cfg.head_dim;
  const int64_t Q = cfg.q_lora_rank, W = cfg.sliding_window, G = cfg.o_groups,
                R = cfg.o_lora_rank, HG = cfg.heads_per_group();
  const double eps = cfg.rms_norm_eps;

  // §4.1 query path: qr = RMSNorm_q_norm(x·wq_aᵀ); q = per-head RMSNorm(qr·wq_bᵀ); RoPE at t.
  // Official-bf16 rounds after every op of both paths (the reference's BF16 tensors).
  std::vector<float> qr(size_t(T * Q)), q(size_t(T * H * d));
  linear(ctx, x, T, w.wq_a, qr.data(), ActQuant::kFp8);
  ctx.bf16(qr.data(), T * Q);
  rms_norm_rows(qr.data(), T, Q, &w.q_norm, eps);
  ctx.bf16(qr.data(), T * Q);
  linear(ctx, qr.data(), T, w.wq_b, q.data(), ActQuant::kFp8);
  ctx.bf16(q.data(), T * H * d);
  rms_norm_rows(q.data(), T * H, d, nullptr, eps);
  ctx.bf16(q.data(), T * H * d);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) apply_rope(rope, q.data() + (t * H + h) * d, d, pos0 + t);
  ctx.bf16(q.data(), T * H * d);
  ctx.emit("attn.q", layer, q.data(), {T, H, d});

  // §4.2 K=V path: kv = RMSNorm_kv_norm(x·wkvᵀ); RoPE at t; official: FP8 NoPE round-trip.
  std::vector<float> kv(size_t(T * d));
  linear(ctx, x, T, w.wkv, kv.data(), ActQuant::kFp8);
  ctx.bf16(kv.data(), T * d);
  rms_norm_rows(kv.data(), T, d, &w.kv_norm, eps);
  ctx.bf16(kv.data(), T * d);
  for (int64_t t = 0; t < T; ++t) {
    apply_rope(rope, kv.data() + t * d, d, pos0 + t);
    ctx.bf16(kv.data() + t * d, d);
    if (ctx.numerics.kv_fp8) kv_fake_quant(cfg, kv.data() + t * d);
  }
  ctx.emit("attn.kv", layer, kv.data(), {T, d});

  // §7 order: indexer (advances its compressor, scores), then the main compressor.
  std::vector<int32_t> topk;
  if (spec.attention == AttentionType::kCSA) {
    DSV4_CHECK(w.indexer.has_value());
    indexer_select(ctx, *w.indexer, rope, x, qr.data(), T, pos0, st.index, layer, &topk);
  }
  int64_t m = 0;
  if (spec.attention != AttentionType::kSliding) {
    DSV4_CHECK(w.compressor.has_value());
    m = w.compressor->ratio;
    const int64_t first_new = compressor_step(ctx, *w.compressor, rope, x, T, pos0, st.comp);
    if (ctx.numerics.kv_fp8)
      for (int64_t j = first_new; j < st.comp.n_entries; ++j)
        kv_fake_quant(cfg, st.comp.entries.data() + j * d);
    if (st.comp.n_entries > first_new)
      ctx.emit(spec.attention == AttentionType::kCSA ? "csa.entries" : "hca.entries", layer,
               st.comp.entries.data() + first_new * d, {st.comp.n_entries - first_new, d});
  }

  // Window rows: positions ≥ pos0 come from this chunk, earlier ones from the ring.
  const int64_t ring_rows = window_ring_rows(cfg.sliding_window);
  if (st.ring.empty()) st.ring.assign(size_t(ring_rows * d), 0.0f);
  auto kv_at = [&](int64_t p) -> const float* {
    return p >= pos0 ? kv.data() + (p - pos0) * d : st.ring.data() + (p % ring_rows) * d;
  };
  const std::vector<float> sink = load_vector(w.attn_sink);
  const float scale = float(1.0 / std::sqrt(double(d)));
  const int64_t K_top = cfg.index_topk;
  std::vector<float> o(size_t(T * H * d));
  ctx.pool.parallel_for(T * H, [&](int64_t b, int64_t e) {
    std::vector<const float*> keys;
    std::vector<float> logit;
    for (int64_t th = b; th < e; ++th) {
      const int64_t t = th / H, h = th % H, pos = pos0 + t;
      keys.clear();
      for (int64_t p = std::max<int64_t>(0, pos - W + 1); p <= pos; ++p) keys.push_back(kv_at(p));
      if (spec.attention == AttentionType::kHCA) {
        for (int64_t j = 0; j < visible_entries(pos, m); ++j)
          keys.push_back(st.comp.entries.data() + j * d);
      } else if (spec.attention == AttentionType::kCSA) {
        for (int64_t i = 0; i < K_top; ++i) {
          const int32_t j = topk[size_t(t * K_top + i)];
          if (j < 0) continue;
          DSV4_CHECK(j < visible_entries(pos, m));
          keys.push_back(st.comp.entries.data() + int64_t(j) * d);
        }
      }
      const float* qh = q.data() + th * d;
      logit.resize(keys.size());
      serial_dots(qh, keys.data(), int64_t(keys.size()), d, logit.data());
      float mx = sink[size_t(h)];
      for (size_t s = 0; s < keys.size(); ++s) {
        logit[s] *= scale;
        mx = std::max(mx, logit[s]);
      }
      float den = std::exp(sink[size_t(h)] - mx);
      for (size_t s = 0; s < keys.size(); ++s) den += (logit[s] = std::exp(logit[s] - mx));
      float* oh = o.data() + th * d;
      for (int64_t i = 0; i < d; ++i) oh[i] = 0.0f;
      for (size_t s = 0; s < keys.size(); ++s) {
        const float p = logit[s] / den;
        for (int64_t i = 0; i < d; ++i) oh[i] += p * keys[s][i];
      }
      ctx.bf16(oh, d);  // official-bf16: the kernel's BF16 output, then the rotation in FP32
      apply_rope(rope, oh, d, pos, /*inverse=*/true);  // §4.4: undo the rotation V carried
      ctx.bf16(oh, d);
    }
  });
  ctx.emit("attn.core", layer, o.data(), {T, H, d});

  // The chunk's rows enter the ring only now: earlier queries of this chunk read the ring slots
  // of positions pos0−W+1 … pos0−1, which later rows of a long chunk would overwrite. All of the
  // last ring_rows positions are kept, the rollback margin included.
  for (int64_t p = std::max(pos0, pos0 + T - ring_rows); p < pos0 + T; ++p)
    std::copy(kv.data() + (p - pos0) * d, kv.data() + (p - pos0 + 1) * d,
              st.ring.data() + (p % ring_rows) * d);

  // §4.5 grouped output: z_g = A_g · o_g (A_g = wo_a rows g·R …), then y = z · wo_bᵀ.
  std::vector<float> og(size_t(T * HG * d)), zg(size_t(T * R)), z(size_t(T * G * R));
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t t = 0; t < T; ++t)
      std::copy(o.data() + (t * H + g * HG) * d, o.data() + (t * H + (g + 1) * HG) * d,
                og.data() + t * HG * d);
    linear_rows(ctx, og.data(), T, w.wo_a, g * R, R, zg.data(), ActQuant::kNone);  // §12: BF16 einsum in the reference
    for (int64_t t = 0; t < T; ++t)
      std::copy(zg.data() + t * R, zg.data() + (t + 1) * R, z.data() + t * G * R + g * R);
  }
  ctx.bf16(z.data(), T * G * R);
  linear(ctx, z.data(), T, w.wo_b, out, ActQuant::kFp8);
  ctx.bf16(out, T * D);
  ctx.emit("attn.out", layer, out, {T, D});
}

}  // namespace dsv4
