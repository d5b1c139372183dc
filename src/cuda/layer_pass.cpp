// The model pass on the GPU (layer_pass.h): embed → L blocks → HC_head, norm, lm_head over the
// logit rows → (sampler); the MTP block's pass. Everything position- or sequence-dependent comes
// from the step plan.
#include "cuda/layer_pass.h"

#include <type_traits>
#include <vector>

#include "cuda/collective.h"
#include "cuda/cuda_check.h"
#include "cuda/host_experts.h"
#include "cuda/kernels/embedding.cuh"
#include "cuda/kernels/gather_rows.cuh"
#include "cuda/kernels/mhc.cuh"
#include "cuda/kernels/mtp_streams.cuh"
#include "cuda/kernels/sampling.cuh"
#include "cuda/kernels/to_bf16.cuh"

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

// The rank's block `layer`: a main layer, or the MTP block's (layer id L, §10).
const DeviceLayer& block(const StepContext& c, int layer) {
  return layer < int(c.m.layers.size()) ? c.m.layers[size_t(layer)] : c.m.mtp->layer;
}

void use_device(const StepContext& c) { DSV4_CUDA_CHECK(cudaSetDevice(c.device)); }

// Each rank's scratch buffer `buffer(s)` of `count` values summed in place by the collective.
template <typename Buffer>
void all_reduce(const Ranks& ranks, Buffer&& buffer, size_t count) {
  DSV4_CHECK_MSG(ranks.comm, "a collective step on ranks without a collective");
  using T = std::remove_pointer_t<decltype(buffer(ranks.contexts.front().s))>;
  std::vector<T*> bufs;
  std::vector<cudaStream_t> streams;
  for (const StepContext& c : ranks.contexts) {
    DSV4_CHECK_MSG(buffer(c.s), "a rank without the buffer its collective sums");
    bufs.push_back(buffer(c.s));
    streams.push_back(c.stream);
  }
  ranks.comm->all_reduce_sum(std::span<T* const>(bufs), count, streams);
}

// One decoder block (§2) on every rank: HC_pre / attention / HC_post, HC_pre / MoE / HC_post on
// s.X. The collective sums the ranks' attention partials (tensor parallelism) between attention and
// its HC_post, and their routed outputs (expert parallelism) between moe_step and the combine; the
// host tier adds its experts' outputs there too.
void enqueue_layer(const Ranks& ranks, int layer) {
  const StepContext& c0 = ranks.contexts.front();
  const size_t T = size_t(c0.T), D = size_t(c0.m.cfg.hidden_size), k = size_t(c0.m.cfg.num_experts_per_tok);
  for (const StepContext& c : ranks.contexts) {
    use_device(c);
    const DeviceLayer& w = block(c, layer);
    hc_pre(c, w.hc_attn, w.attn_norm);
    c.emit_bf16("attn.in", layer, c.s.u, {c.T, int64_t(D)});
    attention_step(c, w, layer);
  }
  const bool tensor_parallel = c0.s.attn_partial != nullptr;
  if (tensor_parallel) all_reduce(ranks, [](const Scratch& s) { return s.attn_partial; }, T * D);
  for (const StepContext& c : ranks.contexts) {
    use_device(c);
    const DeviceLayer& w = block(c, layer);
    if (tensor_parallel) {
      launch_to_bf16({c.s.attn_partial, c.s.attn_out, T * D}, c.stream);
      c.emit_bf16("attn.out", layer, c.s.attn_out, {c.T, int64_t(D)});
    }
    hc_post(c, c.s.attn_out);
    hc_pre(c, w.hc_ffn, w.ffn_norm);
    c.emit_bf16("moe.in", layer, c.s.u, {c.T, int64_t(D)});
    moe_shared(c, w);  // on c.branch where it may run beside the rest (moe_step.h)
    moe_route(c, w, layer);
    if (ranks.host) ranks.host->start(c, layer);  // its share runs beside the GPU's experts
    moe_experts(c, w, layer);
  }
  if (ranks.host) ranks.host->finish(c0, layer);
  if (ranks.comm) all_reduce(ranks, [](const Scratch& s) { return s.moe.picks; }, T * k * D);
  for (const StepContext& c : ranks.contexts) {
    use_device(c);
    if (c.s.moe.picks) moe_combine_picks(c, layer);
    hc_post(c, c.s.ffn_out);
    c.emit_bf16("hc.streams", layer, c.s.X, {c.T, int(c.m.cfg.hc_mult), int64_t(D)});
  }
}

// A pass needs a collective for several ranks, and a host tier only beside one rank.
void check_ranks(const Ranks& ranks) {
  DSV4_CHECK(!ranks.contexts.empty() && (ranks.comm || ranks.contexts.size() == 1));
  DSV4_CHECK(!ranks.host || ranks.contexts.size() == 1);
}

}  // namespace

void enqueue_pass(const Ranks& ranks, bool sample) {
  check_ranks(ranks);
  for (const StepContext& c : ranks.contexts) {
    use_device(c);
    EmbeddingParams ep;
    ep.table = c.m.embed.get();
    ep.tokens = c.tokens;
    ep.streams = c.s.X;
    ep.T = c.T;
    ep.n = int(c.m.cfg.hc_mult);
    ep.D = int(c.m.cfg.hidden_size);
    ep.vocab = int(c.m.cfg.vocab_size);
    launch_embedding(ep, c.stream);
  }
  const StepContext& c = ranks.contexts.front();
  for (size_t l = 0; l < c.m.layers.size(); ++l) enqueue_layer(ranks, int(l));
  use_device(c);
  const ModelConfig& cfg = c.m.cfg;
  c.emit_bf16("final.streams", -1, c.s.X, {c.T, cfg.hc_mult, cfg.hidden_size});
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

void enqueue_mtp_pass(const Ranks& ranks) {
  check_ranks(ranks);
  for (const StepContext& c : ranks.contexts) {
    use_device(c);
    DSV4_CHECK(c.m.mtp && c.s.mtp_in);
    const DeviceMtp& mtp = *c.m.mtp;
    const ModelConfig& cfg = c.m.cfg;
    const int T = c.T, n = int(cfg.hc_mult), D = int(cfg.hidden_size);
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
  }
  // Step 4: the decoder block (layer id L: its own KV pool); step 5: its HC_head and norm before
  // the shared lm_head, on rank 0.
  const StepContext& c = ranks.contexts.front();
  enqueue_layer(ranks, int(c.m.layers.size()));
  use_device(c);
  if (c.n_logits > 0) head(c, c.m.mtp->hc_head, c.m.mtp->norm);
}

}  // namespace dsv4::cuda
