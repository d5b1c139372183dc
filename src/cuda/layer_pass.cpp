// The model pass on the GPU (layer_pass.h): embed → L blocks → HC_head, norm, lm_head over the
// logit rows → (sampler); the MTP block's pass. Everything position- or sequence-dependent comes
// from the step plan.
#include "cuda/layer_pass.h"

#include "cuda/kernels/embedding.cuh"
#include "cuda/kernels/gather_rows.cuh"
#include "cuda/kernels/mhc.cuh"
#include "cuda/kernels/mtp_streams.cuh"
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

// §9: HC_head → RMSNorm → lm_head for the plan's logit rows (gathered first); the main model's
// HC_head and norm, or the MTP block's (§10 step 5), before the shared lm_head.
void head(const StepContext& c, const DeviceHyperConn& hc_head, const DeviceBuffer<__nv_bfloat16>& norm) {
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
  hp.fn = hc_head.fn.get();
  hp.base = hc_head.base.get();
  hp.scale = hc_head.scale.get();
  hp.partial = c.s.mhc_partial;
  hp.h = c.s.hh;
  hp.n_tokens = L;
  hp.D = D;
  hp.norm_weight = norm.get();  // §9's final norm, fused
  hp.hc_eps = float(cfg.hc_eps);
  hp.rms_eps = float(cfg.rms_norm_eps);
  launch_mhc_head(hp, c.stream);
  c.emit_bf16("final.hidden", -1, c.s.hh, {L, D});
  linear_f32(c, c.m.head, c.s.hh, L, c.s.logits);
}

// One decoder block (§2): HC_pre / attention / HC_post, HC_pre / MoE / HC_post on s.X.
void enqueue_layer(const StepContext& c, const DeviceLayer& w, int layer) {
  const int T = c.T, n = int(c.m.cfg.hc_mult), D = int(c.m.cfg.hidden_size);
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
  for (size_t l = 0; l < c.m.layers.size(); ++l) enqueue_layer(c, c.m.layers[l], int(l));
  c.emit_bf16("final.streams", -1, c.s.X, {T, n, D});
  if (c.n_logits == 0) return;
  head(c, c.m.hc_head, c.m.norm);
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

void enqueue_mtp_pass(const StepContext& c) {
  DSV4_CHECK(c.m.mtp && c.s.mtp_in);
  const DeviceMtp& mtp = *c.m.mtp;
  const ModelConfig& cfg = c.m.cfg;
  const int T = c.T, n = int(cfg.hc_mult), D = int(cfg.hidden_size);
  const int layer = int(c.m.layers.size());  // the block's layer id L (§10) and its KV pool
  // Step 1: e = e_proj(RMSNorm_enorm(embed[next token])) into s.ffn_out (s.u holds the embedding).
  GatherRowsParams g;
  g.src = c.m.embed.get();
  g.index = c.tokens;
  g.dst = c.s.u;
  g.n = T;
  g.width = D;
  launch_gather_rows(g, c.stream);
  const QuantAct eq = rmsnorm_quantize(c, c.s.u, mtp.enorm.get(), T, D);
  linear_q(c, mtp.e_proj, eq, T, c.s.ffn_out);
  // Steps 2–3: X_j = h_proj(RMSNorm_hnorm(streams_j)) + e, each stream row alone. The T·n rows go
  // through in n groups of T consecutive rows (the quantiser's scratch holds T rows of D), each in
  // slices where the skinny matmul's rows do not depend on the row count (empty segments).
  DSV4_CUDA_CHECK(cudaMemcpyAsync(c.s.X, c.s.mtp_in, size_t(T) * n * D * sizeof(__nv_bfloat16),
                                  cudaMemcpyDeviceToDevice, c.stream));
  StepContext sliced = c;
  sliced.segments = {};
  for (int j = 0; j < n; ++j) {
    __nv_bfloat16* rows = c.s.X + size_t(j) * T * D;
    const QuantAct hq = rmsnorm_quantize(sliced, rows, mtp.hnorm.get(), T, D);
    linear_q(sliced, mtp.h_proj, hq, T, rows);
  }
  AddToStreamsParams a;
  a.X = c.s.X;
  a.e = c.s.ffn_out;
  a.T = T;
  a.n = n;
  a.D = D;
  launch_add_to_streams(a, c.stream);
  // Step 4: the decoder block; step 5: its HC_head and norm before the shared lm_head.
  enqueue_layer(c, mtp.layer, layer);
  if (c.n_logits > 0) head(c, mtp.hc_head, mtp.norm);
}

}  // namespace dsv4::cuda
