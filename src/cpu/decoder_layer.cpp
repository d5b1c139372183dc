// Decoder block: the two hyper-connected sub-layers in order.
#include "cpu/decoder_layer.h"

#include <vector>

#include "cpu/linear.h"
#include "cpu/mhc.h"
#include "cpu/moe.h"

namespace dsv4 {

void decoder_layer(const CpuContext& ctx, const LayerWeights& w, int layer, const RopeTable& rope,
                   float* X, const int32_t* tokens, int64_t T, int64_t pos0, AttentionState& st) {
  const int64_t D = ctx.cfg.hidden_size, n = ctx.cfg.hc_mult;
  std::vector<float> u(size_t(T * D)), f(size_t(T * D));
  HcMix mix;

  // Official-bf16 rounds u after HC_pre and after the norm, and the streams after HC_post (§3:
  // mixes FP32, streams stored BF16); post/comb stay FP32.
  hc_pre(ctx, w.hc_attn, X, T, u.data(), &mix);
  ctx.bf16(u.data(), T * D);
  rms_norm_rows(u.data(), T, D, &w.attn_norm, ctx.cfg.rms_norm_eps);
  ctx.bf16(u.data(), T * D);
  ctx.emit("attn.in", layer, u.data(), {T, D});
  attention_forward(ctx, w.attn, w.spec, layer, rope, u.data(), T, pos0, st, f.data());
  hc_post(ctx, f.data(), mix, X, T);
  ctx.bf16(X, T * n * D);

  hc_pre(ctx, w.hc_ffn, X, T, u.data(), &mix);
  ctx.bf16(u.data(), T * D);
  rms_norm_rows(u.data(), T, D, &w.ffn_norm, ctx.cfg.rms_norm_eps);
  ctx.bf16(u.data(), T * D);
  ctx.emit("moe.in", layer, u.data(), {T, D});
  moe_forward(ctx, w.ffn, w.spec, layer, u.data(), tokens, T, f.data());
  hc_post(ctx, f.data(), mix, X, T);
  ctx.bf16(X, T * n * D);
  ctx.emit("hc.streams", layer, X, {T, n, D});
}

}  // namespace dsv4
