// The model pass on the GPU (layer_pass.h): embed → L blocks → HC_head, norm, lm_head over the
// logit rows → (sampler). Everything position- or sequence-dependent comes from the step plan.
#include "cuda/layer_pass.h"

#include "cuda/kernels/embedding.cuh"
#include "cuda/kernels/gather_rows.cuh"
#include "cuda/kernels/mhc.cuh"
#include "cuda/kernels/sampling.cuh"

namespace dsv4::cuda {

namespace {

// HC_pre (§3.1) into s.u with s.post / s.comb, the sub-layer's RMSNorm fused, and u's §12 FP8
// quantisation into s.aq / s.aqs (block_input(), step.h) for the sub-layer's first linears.
void hc_pre(const StepContext& c, const DeviceHyperConn& hc, const DeviceBuffer<__nv_bfloat16>& norm) {
  const ModelConfig& cfg = c.m.cfg;
  MhcPreParams p;
  p.x = c.s.X;
  p.fn = hc.fn.get();
  p.base = hc.base.get();
  p.scale = hc.scale.get();
  p.partial = c.s.mhc_partial;
  p.u = c.s.u;
  p.post = c.s.post;
  p.comb = c.s.comb;
  p.norm_weight = norm.get();
  const QuantAct q = block_input(c);
  p.q = const_cast<uint8_t*>(q.q);
  p.q_scale = const_cast<uint8_t*>(q.scale);
  p.fake = const_cast<__nv_bfloat16*>(q.fake);
  p.n_tokens = c.T;
  p.D = int(cfg.hidden_size);
  p.sinkhorn_iters = int(cfg.hc_sinkhorn_iters);
  p.hc_eps = float(cfg.hc_eps);
  p.rms_eps = float(cfg.rms_norm_eps);
  launch_mhc_pre(p, c.stream);
}

// HC_post (§3.2): X = post·f + Cᵀ·X.
void hc_post(const StepContext& c, const __nv_bfloat16* f) {
  MhcPostParams p;
  p.f = f;
  p.x = c.s.X;
  p.post = c.s.post;
  p.comb = c.s.comb;
  p.out = c.s.X;
  p.n_tokens = c.T;
  p.D = int(c.m.cfg.hidden_size);
  launch_mhc_post(p, c.stream);
}

// §9: HC_head → RMSNorm → lm_head for the plan's logit rows (gathered first).
void head(const StepContext& c) {
  const ModelConfig& cfg = c.m.cfg;
  const int n = int(cfg.hc_mult), D = int(cfg.hidden_size), L = c.n_logits;
  GatherRowsParams g;
  g.src = c.s.X;
  g.index = c.plan.logit_row_index();
  g.dst = c.s.Xh;
  g.n = L;
  g.width = int64_t(n) * D;
  launch_gather_rows(g, c.stream);
  MhcHeadParams hp;
  hp.x = c.s.Xh;
  hp.fn = c.m.hc_head.fn.get();
  hp.base = c.m.hc_head.base.get();
  hp.scale = c.m.hc_head.scale.get();
  hp.partial = c.s.mhc_partial;
  hp.h = c.s.hh;
  hp.n_tokens = L;
  hp.D = D;
  hp.norm_weight = c.m.norm.get();  // §9's final norm, fused
  hp.hc_eps = float(cfg.hc_eps);
  hp.rms_eps = float(cfg.rms_norm_eps);
  launch_mhc_head(hp, c.stream);
  c.emit_bf16("final.hidden", -1, c.s.hh, {L, D});
  linear_f32(c, c.m.head, c.s.hh, L, c.s.logits);
}

}  // namespace

void enqueue_pass(const StepContext& c, bool sample) {
  const ModelConfig& cfg = c.m.cfg;
  const int T = c.T, n = int(cfg.hc_mult), D = int(cfg.hidden_size);
  EmbeddingParams ep;
  ep.table = c.m.embed.get();
  ep.tokens = c.tokens;
  ep.streams = c.s.X;
  ep.T = T;
  ep.n = n;
  ep.D = D;
  ep.vocab = int(cfg.vocab_size);
  launch_embedding(ep, c.stream);
  for (size_t l = 0; l < c.m.layers.size(); ++l) {
    const DeviceLayer& w = c.m.layers[l];
    const int layer = int(l);
    hc_pre(c, w.hc_attn, w.attn_norm);
    c.emit_bf16("attn.in", layer, c.s.u, {T, D});
    attention_step(c, w, layer);
    hc_post(c, c.s.attn_out);
    hc_pre(c, w.hc_ffn, w.ffn_norm);
    c.emit_bf16("moe.in", layer, c.s.u, {T, D});
    moe_step(c, w, layer);
    hc_post(c, c.s.ffn_out);
    c.emit_bf16("hc.streams", layer, c.s.X, {T, n, D});
  }
  c.emit_bf16("final.streams", -1, c.s.X, {T, n, D});
  if (c.n_logits == 0) return;
  head(c);
  c.emit_f32("logits", -1, c.s.logits, {c.n_logits, cfg.vocab_size});
  if (!sample) return;
  SampleParams sp;
  sp.logits = c.s.logits;
  sp.token = c.s.sampled;
  sp.per_row = c.plan.sampling();
  sp.rows = c.n_logits;
  sp.vocab = int(cfg.vocab_size);
  launch_sample(sp, c.stream);
}

}  // namespace dsv4::cuda
