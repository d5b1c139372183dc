// The MoE sub-layer on the GPU (§8) for the T tokens of a pass: router logits in FP32, routing
// (hash or biased top-k) on the device, the shared expert, the k routed experts per token from
// their packed weights (the routing weight applied before w2, §12), and the FP32 sum.
#include "cuda/kernels/act_quant.cuh"
#include "cuda/kernels/gemv_bf16.cuh"
#include "cuda/kernels/gemv_mxfp4.cuh"
#include "cuda/kernels/moe_combine.cuh"
#include "cuda/kernels/router.cuh"
#include "cuda/kernels/swiglu.cuh"
#include "cuda/step.h"

namespace dsv4::cuda {

MoeScratch::MoeScratch(const ModelConfig& c, int rows, DeviceArena& arena) {
  const size_t T = size_t(rows), k = size_t(c.num_experts_per_tok), I = size_t(c.moe_intermediate_size);
  const size_t D = size_t(c.hidden_size);
  expert_idx = arena.take<int32_t>(T * k);
  router_logits = arena.take<float>(T * size_t(c.n_routed_experts));
  expert_w = arena.take<float>(T * k);
  g = arena.take<__nv_bfloat16>(T * k * I);
  up = arena.take<__nv_bfloat16>(T * k * I);
  h = arena.take<__nv_bfloat16>(T * k * I);
  y = arena.take<__nv_bfloat16>(T * k * D);
  sg = arena.take<__nv_bfloat16>(T * I);
  sup = arena.take<__nv_bfloat16>(T * I);
  sh = arena.take<__nv_bfloat16>(T * I);
  sy = arena.take<__nv_bfloat16>(T * D);
  fake = arena.take<__nv_bfloat16>(T * k * I);
  hq = arena.take<uint8_t>(T * k * I);
  hqs = arena.take<uint8_t>(T * k * I / 128);
}

namespace {

// One routed-expert projection for n_sel selections: y[s] = x[s / sel_per_x] · W_{idx[s]}ᵀ.
// x is FP8 (q/scale) for packed FP4 experts and BF16 fake-quant values for BF16 experts.
void experts(const StepContext& c, const DeviceExperts& w, const QuantAct& x, int sel_per_x,
             int n_sel, __nv_bfloat16* y) {
  if (w.format == DeviceExperts::Format::kBF16) {
    GemvBf16Params p;
    p.w = reinterpret_cast<const __nv_bfloat16*>(w.data.get());
    p.x = x.fake;
    p.y = y;
    p.out_bf16 = true;
    p.expert_idx = c.s.moe.expert_idx;
    p.n_experts = w.E;
    p.sel_per_x = sel_per_x;
    p.M = n_sel;
    p.N = w.N;
    p.K = w.K;
    launch_gemv_bf16(p, c.stream);
    return;
  }
  GemvMxfp4Params p;
  p.format = w.format == DeviceExperts::Format::kNVFP4 ? ExpertWeightFormat::kNVFP4
                                                       : ExpertWeightFormat::kMXFP4;
  p.w = w.data.get();
  p.w_scale = w.scale.get();
  p.global_scale = w.global_scale.get();
  p.expert_idx = c.s.moe.expert_idx;
  p.x = x.q;
  p.x_scale = x.scale;
  p.sel_per_x = sel_per_x;
  p.y = y;
  p.out_bf16 = true;
  p.n_sel = n_sel;
  p.n_experts = w.E;
  p.N = w.N;
  p.K = w.K;
  launch_gemv_mxfp4(p, c.stream);
}

// h = SwiGLU(g, v) (× routing weight), and its §12 quantisation for the w2 projection.
QuantAct swiglu(const StepContext& c, const __nv_bfloat16* g, const __nv_bfloat16* v,
                const float* row_weight, int rows, __nv_bfloat16* h, bool bf16_w2) {
  const int I = int(c.m.cfg.moe_intermediate_size);
  SwigluParams p;
  p.gate = g;
  p.up = v;
  p.row_weight = row_weight;
  p.h = h;
  p.q = c.s.moe.hq;
  p.q_scale = c.s.moe.hqs;
  p.n_rows = rows;
  p.I = I;
  p.limit = float(c.m.cfg.swiglu_limit);
  launch_swiglu(p, c.stream);
  QuantAct out{c.s.moe.hq, c.s.moe.hqs, nullptr, I};
  if (bf16_w2) {  // BF16 weights consume the same FP8 grid as BF16 values
    ActQuantParams a;
    a.x = h;
    a.fake = c.s.moe.fake;
    a.rows = rows;
    a.K = I;
    launch_act_quant(a, c.stream);
    out.fake = c.s.moe.fake;
  }
  return out;
}

}  // namespace

void moe_step(const StepContext& c, const DeviceLayer& w, int layer) {
  const ModelConfig& cfg = c.m.cfg;
  const int T = c.T, D = int(cfg.hidden_size), E = int(cfg.n_routed_experts);
  const int k = int(cfg.num_experts_per_tok);
  Scratch& s = c.s;

  // §8.1: s = sqrt(softplus(x·gateᵀ)) in FP32; hash or biased top-k; weights renormalised.
  linear_f32(c, w.gate, s.u, T, s.moe.router_logits);
  RouterParams rp;
  rp.logits = s.moe.router_logits;
  if (w.spec.routing == RoutingType::kScore) {
    rp.bias = w.gate_bias.get();
  } else {
    rp.tid2eid = w.tid2eid.get();
    rp.token_ids = c.tokens;
  }
  rp.expert_idx = s.moe.expert_idx;
  rp.expert_weight = s.moe.expert_w;
  rp.n_tokens = T;
  rp.E = E;
  rp.k = k;
  rp.vocab = int(cfg.vocab_size);
  rp.route_scale = float(cfg.routed_scaling_factor);
  launch_router(rp, c.stream);
  c.emit_i32("moe.experts", layer, s.moe.expert_idx, {T, k});
  c.emit_f32("moe.weights", layer, s.moe.expert_w, {T, k});

  const QuantAct xq = quantize(c, s.u, D, s.aq, s.aqs, s.fake);
  // §8.3 shared expert.
  linear_q(c, w.shared_w1, xq, T, s.moe.sg);
  linear_q(c, w.shared_w3, xq, T, s.moe.sup);
  // §8.2 routed experts: T·k selections, selection t·k + i reads token t's activations.
  experts(c, w.w1, xq, k, T * k, s.moe.g);
  experts(c, w.w3, xq, k, T * k, s.moe.up);
  // The shared w2 goes first: its SwiGLU quantisation shares the scratch with the routed one.
  const QuantAct shq = swiglu(c, s.moe.sg, s.moe.sup, nullptr, T, s.moe.sh, !w.shared_w2.fp8);
  linear_q(c, w.shared_w2, shq, T, s.moe.sy);
  const QuantAct hq = swiglu(c, s.moe.g, s.moe.up, s.moe.expert_w, T * k, s.moe.h,
                             w.w2.format == DeviceExperts::Format::kBF16);
  experts(c, w.w2, hq, 1, T * k, s.moe.y);

  MoeCombineParams mp;
  mp.routed = s.moe.y;
  mp.shared = s.moe.sy;
  mp.out = s.ffn_out;
  mp.expert_ids = s.moe.expert_idx;  // the reference's order: routed by ascending expert id
  mp.T = T;
  mp.k = k;
  mp.D = D;
  launch_moe_combine(mp, c.stream);
  c.emit_bf16("moe.out", layer, s.ffn_out, {T, D});
}

}  // namespace dsv4::cuda
