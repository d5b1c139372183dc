// The MoE sub-layer on the GPU (§8) for the T rows of a pass: router logits in FP32, routing
// (hash or biased top-k) on the device, the shared expert, then the routed half: the dispatch
// plan (the picks regrouped by expert), the routed experts grouped — each expert's weights read
// once per step — with the routing weight applied before w2's quantisation (§12), and the FP32
// sum back in row order. No device count comes back to the host: every launch is shaped by T.
#include "cuda/kernels/gather_rows.cuh"
#include "cuda/kernels/moe_combine.cuh"
#include "cuda/kernels/moe_dispatch.cuh"
#include "cuda/kernels/moe_grouped_gemm.cuh"
#include "cuda/kernels/router.cuh"
#include "cuda/kernels/swiglu.cuh"
#include "cuda/matmul.h"
#include "cuda/step.h"

namespace dsv4::cuda {

MoeScratch::MoeScratch(const ModelConfig& c, int rows, DeviceArena& arena, const MoeShard& shard) {
  const size_t T = size_t(rows), k = size_t(c.num_experts_per_tok), I = size_t(c.moe_intermediate_size);
  const size_t D = size_t(c.hidden_size), E = size_t(shard.experts > 0 ? shard.experts : c.n_routed_experts);
  expert_idx = arena.take<int32_t>(T * k);
  router_logits = arena.take<float>(T * size_t(c.n_routed_experts));  // the router scores them all
  expert_w = arena.take<float>(T * k);
  plan = MoeDispatchPlan::carve(arena, int(E), rows, int(k));  // this rank's experts only
  g = arena.take<__nv_bfloat16>(T * k * I);
  up = arena.take<__nv_bfloat16>(T * k * I);
  h = arena.take<__nv_bfloat16>(T * k * I);
  y = arena.take<__nv_bfloat16>(T * k * D);
  hq = arena.take<uint8_t>(T * k * I);
  hqs = arena.take<uint8_t>(T * k * I / 128);
  sg = arena.take<__nv_bfloat16>(T * I);
  sup = arena.take<__nv_bfloat16>(T * I);
  sh = arena.take<__nv_bfloat16>(T * I);
  sy = arena.take<__nv_bfloat16>(T * D);
  shq = arena.take<uint8_t>(T * I);
  shqs = arena.take<uint8_t>(T * I / 128);
  shf = arena.take<__nv_bfloat16>(T * I);
  if (c.expert_format == ExpertFormat::kBF16) hf = arena.take<__nv_bfloat16>(T * k * I);
  if (shard.picks) picks = arena.take<__nv_bfloat16>(T * k * D);
  if (shard.host_experts > 0) host_plan = MoeDispatchPlan::carve(arena, shard.host_experts, rows, int(k));
}

namespace {

// One routed-expert projection over the plan's grouped rows: y_m[j] = x[row(j)] · W_m,e(j)ᵀ for
// the n_mats tensors w[m] (w1 and w3 share one launch), row(j) = x_row[j] or j. Packed FP4
// experts read FP8 x (q, scale), BF16 experts its BF16 fake-quant values (fake).
void routed(const DeviceExperts* const* w, int n_mats, const uint8_t* q, const uint8_t* scale,
            const __nv_bfloat16* fake, const int32_t* x_row, const MoeDispatchPlan& plan, int max_sel,
            bool fp8, __nv_bfloat16* const* y, cudaStream_t stream) {
  for (int m = 1; m < n_mats; ++m)
    DSV4_CHECK_MSG(w[m]->format == w[0]->format && w[m]->N == w[0]->N && w[m]->K == w[0]->K,
                   "moe: routed tensors of one launch differ in format or shape");
  if (w[0]->format == DeviceExperts::Format::kBF16) {
    DSV4_CHECK_MSG(fake, "moe: BF16 routed experts fed without fake-quantised activations");
    MoeGroupedBf16Params p;
    p.n_mats = n_mats;
    for (int m = 0; m < n_mats; ++m) {
      p.w[m] = reinterpret_cast<const __nv_bfloat16*>(w[m]->data.get());
      p.y[m] = y[m];
    }
    p.x = fake;
    p.x_row = x_row;
    p.offsets = plan.offsets;
    p.E = plan.E;
    p.N = w[0]->N;
    p.K = w[0]->K;
    p.max_sel = max_sel;
    launch_moe_grouped_bf16(p, stream);
    return;
  }
  MoeGroupedParams p;
  p.format = w[0]->format == DeviceExperts::Format::kNVFP4 ? ExpertWeightFormat::kNVFP4 : ExpertWeightFormat::kMXFP4;
  p.n_mats = n_mats;
  for (int m = 0; m < n_mats; ++m) {
    p.w[m] = w[m]->data.get();
    p.w_scale[m] = w[m]->scale.get();
    p.global_scale[m] = w[m]->global_scale.get();
    p.y[m] = y[m];
  }
  p.x = q;
  p.x_scale = scale;
  p.x_row = x_row;
  p.offsets = plan.offsets;
  p.E = plan.E;
  p.N = w[0]->N;
  p.K = w[0]->K;
  p.max_sel = max_sel;
  p.fp8_rows = fp8;
  launch_moe_grouped_gemm(p, stream);
}

// §8.4: Σ routed (ascending expert id, FP32 — the reference's order) + shared, BF16, back in row
// order; routed rows through routed_row (grouped order) or in pick order (nullptr).
void combine(const ModelConfig& cfg, const __nv_bfloat16* routed, const int32_t* routed_row, const MoeRoutedInput& in,
             cudaStream_t stream) {
  MoeCombineParams mp;
  mp.routed = routed;
  mp.routed_row = routed_row;
  mp.shared = in.shared;
  mp.out = in.out;
  mp.expert_ids = in.expert_idx;
  mp.n_real = in.n_real;
  mp.T = in.T;
  mp.k = int(cfg.num_experts_per_tok);
  mp.D = int(cfg.hidden_size);
  launch_moe_combine(mp, stream);
}

// h = SwiGLU(g, v) (× routing weight) for `rows` rows (of which *active are live when set), and
// its §12 quantisation for w2: FP8 q/scale, plus the BF16 fake-quant values when `fake` is set.
void swiglu(const ModelConfig& cfg, const __nv_bfloat16* g, const __nv_bfloat16* v, const float* row_weight,
            int rows, const int32_t* active, __nv_bfloat16* h, uint8_t* q, uint8_t* qs, __nv_bfloat16* fake,
            cudaStream_t stream) {
  SwigluParams p;
  p.gate = g;
  p.up = v;
  p.row_weight = row_weight;
  p.h = h;
  p.q = q;
  p.q_scale = qs;
  p.fake = fake;
  p.n_rows = rows;
  p.n_rows_active = active;
  p.I = int(cfg.moe_intermediate_size);
  p.limit = float(cfg.swiglu_limit);
  launch_swiglu(p, stream);
}

}  // namespace

void moe_routed(const ModelConfig& cfg, const DeviceExperts& w1, const DeviceExperts& w3, const DeviceExperts& w2,
                MoeScratch& ms, const MoeRoutedInput& in, cudaStream_t stream) {
  const int T = in.T, D = int(cfg.hidden_size), E = ms.plan.E, k = int(cfg.num_experts_per_tok);
  DSV4_CHECK_MSG(T <= ms.plan.max_rows, "moe: ", T, " rows in a pass sized for ", ms.plan.max_rows);
  // A plan may cover the first E of the tensors' experts (the host tier's bus share, host_experts.h).
  DSV4_CHECK_MSG(w1.E >= E && w3.E >= E && w2.E >= E, "moe: ", w1.E, " experts in a pass planned for ", E);
  DSV4_CHECK_MSG(w1.first == in.expert_base && w3.first == in.expert_base && w2.first == in.expert_base &&
                     in.expert_base + E <= int(cfg.n_routed_experts),
                 "moe: experts from ", w1.first, " fed as a shard from ", in.expert_base);
  DSV4_CHECK_MSG(ms.picks || E == int(cfg.n_routed_experts),
                 "moe: a rank holding ", E, " of ", cfg.n_routed_experts, " experts must leave its outputs in pick order");

  // The picks regrouped by expert: counts, offsets, the permutation both ways (padding rows and
  // invalid picks left out).
  MoeDispatchParams dp;
  dp.expert_idx = in.expert_idx;
  dp.expert_weight = in.expert_w;
  dp.n_real = in.n_real;
  dp.T = T;
  dp.plan = ms.plan;
  dp.expert_base = in.expert_base;
  launch_moe_dispatch(dp, stream);
  const int max_sel = T * k;                   // grouped rows the launches are shaped for
  const int32_t* n_sel = ms.plan.offsets + E;  // device: grouped rows of this pass

  // §8.2 over the grouped rows: w1 and w3 in one launch (x rows through plan.sel_row), SwiGLU
  // × routing weight before w2's quantisation (§12), then w2 on the grouped h.
  const DeviceExperts* w13[2] = {&w1, &w3};
  __nv_bfloat16* gu[2] = {ms.g, ms.up};
  routed(w13, 2, in.x_q, in.x_scale, in.x_fake, ms.plan.sel_row, ms.plan, max_sel, in.fp8, gu, stream);
  const bool bf16_w2 = w2.format == DeviceExperts::Format::kBF16;
  DSV4_CHECK_MSG(!bf16_w2 || ms.hf, "moe: BF16 routed experts in a model whose config says ",
                 to_string(cfg.expert_format));
  swiglu(cfg, ms.g, ms.up, ms.plan.sel_weight, max_sel, n_sel, ms.h, ms.hq, ms.hqs, bf16_w2 ? ms.hf : nullptr,
         stream);
  const DeviceExperts* w2s[1] = {&w2};
  __nv_bfloat16* y[1] = {ms.y};
  routed(w2s, 1, ms.hq, ms.hqs, ms.hf, nullptr, ms.plan, max_sel, in.fp8, y, stream);

  if (ms.picks) {  // expert parallelism: pick order, +0 where another rank's expert was picked
    GatherRowsParams g;
    g.src = ms.y;
    g.index = ms.plan.pos_of;
    g.dst = ms.picks;
    g.n = T * k;
    g.width = D;
    g.keep_negative = in.keep_other_picks;
    launch_gather_rows(g, stream);
    return;
  }
  combine(cfg, ms.y, ms.plan.pos_of, in, stream);
}

std::vector<RowRun> moe_row_runs(const StepContext& c) {
  const ModelConfig& cfg = c.m.cfg;
  // Padding rows (a decode graph's bucket) sit past n_real, which the dispatch reads per launch:
  // such a pass, all decode rows, stays one run.
  const bool fp8 = c.m.fp8_expert_prefill && cfg.expert_format == ExpertFormat::kMXFP4;
  if (fp8 && c.m.fp8_expert_decode) return {{0, c.T, true}};  // every row on the FP8 kernel
  const bool split = fp8 && c.plan.real_rows() == c.T;
  if (!split) return {{0, c.T, false}};
  return row_runs(c.segments, c.T, [&](int n) {
    return grouped_prefill_shaped(int64_t(n) * cfg.num_experts_per_tok, int(cfg.n_routed_experts));
  });
}

void moe_routed_runs(const ModelConfig& cfg, const DeviceExperts& w1, const DeviceExperts& w3, const DeviceExperts& w2,
                     MoeScratch& ms, const MoeRoutedInput& in, const std::vector<RowRun>& runs, cudaStream_t stream) {
  const size_t D = size_t(cfg.hidden_size), k = size_t(cfg.num_experts_per_tok);
  for (const RowRun& r : runs) {
    const size_t t0 = size_t(r.first);
    MoeRoutedInput sub = in;
    sub.x_q = in.x_q ? in.x_q + t0 * D : nullptr;
    sub.x_scale = in.x_scale ? in.x_scale + t0 * (D / kActBlockSize) : nullptr;
    sub.x_fake = in.x_fake ? in.x_fake + t0 * D : nullptr;
    sub.expert_idx = in.expert_idx + t0 * k;
    sub.expert_w = in.expert_w + t0 * k;
    sub.shared = in.shared ? in.shared + t0 * D : nullptr;
    sub.out = in.out ? in.out + t0 * D : nullptr;
    sub.T = r.n;
    sub.fp8 = r.prefill;
    if (runs.size() > 1) sub.n_real = nullptr;  // moe_row_runs splits only passes without padding rows
    MoeScratch rows = ms;  // the same buffers, reused run after run; pick-order outputs at the run's rows
    if (ms.picks) rows.picks = ms.picks + t0 * k * D;
    moe_routed(cfg, w1, w3, w2, rows, sub, stream);
  }
}

void moe_combine_routed(const ModelConfig& cfg, const MoeScratch& ms, const MoeRoutedInput& in, cudaStream_t stream) {
  DSV4_CHECK_MSG(ms.picks, "moe: combining from pick order without pick-order buffers");
  combine(cfg, ms.picks, nullptr, in, stream);  // no routed_row: pick (t, i) is row t·k + i
}

namespace {

// The routed half's rows, picks, shared output and destination in a step (the input is set by
// moe_step).
MoeRoutedInput routed_input(const StepContext& c) {
  MoeRoutedInput in;
  in.expert_idx = c.s.moe.expert_idx;
  in.expert_w = c.s.moe.expert_w;
  in.n_real = c.n_real;
  in.shared = c.s.moe.sy;
  in.out = c.s.ffn_out;
  in.T = c.T;
  return in;
}

}  // namespace

void moe_route(const StepContext& c, const DeviceLayer& w, int layer) {
  const ModelConfig& cfg = c.m.cfg;
  const int T = c.T, E = int(cfg.n_routed_experts), k = int(cfg.num_experts_per_tok);
  Scratch& s = c.s;
  MoeScratch& ms = s.moe;

  // §8.1: s = sqrt(softplus(x·gateᵀ)) in FP32; hash or biased top-k; weights renormalised.
  linear_f32(c, w.gate, s.u, T, ms.router_logits);
  RouterParams rp;
  rp.logits = ms.router_logits;
  if (w.spec.routing == RoutingType::kScore) {
    rp.bias = w.gate_bias.get();
  } else {
    rp.tid2eid = w.tid2eid.get();
    rp.token_ids = c.tokens;
  }
  rp.expert_idx = ms.expert_idx;
  rp.expert_weight = ms.expert_w;
  rp.n_tokens = T;
  rp.E = E;
  rp.k = k;
  rp.vocab = int(cfg.vocab_size);
  rp.route_scale = float(cfg.routed_scaling_factor);
  launch_router(rp, c.stream);
  c.emit_i32("moe.experts", layer, ms.expert_idx, {T, k});
  c.emit_f32("moe.weights", layer, ms.expert_w, {T, k});
}

void moe_shared(const StepContext& c, const DeviceLayer& w) {
  const ModelConfig& cfg = c.m.cfg;
  const int T = c.T;
  MoeScratch& ms = c.s.moe;
  // On c.branch beside the routing where the branch may hold linears (step.h: branch_linears).
  // block_input(c) stays valid on the branch until the join: nothing quantises into s.aq between
  // HC_pre and the next sub-layer's (the router reads s.u, the routed experts s.aq).
  const StepContext b = branch_linears(c) ? fork_branch(c) : c;
  // §8.3 shared expert.
  const QuantAct xq = block_input(b);  // s.u, normalised and quantised by HC_pre (layer_pass.cpp)
  linear_q_pair(b, w.shared_w1, ms.sg, w.shared_w3, ms.sup, xq, T);
  __nv_bfloat16* shf = w.shared_w2.fp8 ? nullptr : ms.shf;  // BF16 weights consume BF16 values
  swiglu(cfg, ms.sg, ms.sup, nullptr, T, nullptr, ms.sh, ms.shq, ms.shqs, shf, b.stream);
  linear_q(b, w.shared_w2, QuantAct{ms.shq, ms.shqs, shf, int(cfg.moe_intermediate_size)}, T, ms.sy);
  end_branch(b);  // joined before the routed experts (moe_experts)
}

void moe_experts(const StepContext& c, const DeviceLayer& w, int layer) {
  const ModelConfig& cfg = c.m.cfg;
  const int T = c.T, D = int(cfg.hidden_size);
  Scratch& s = c.s;
  MoeScratch& ms = s.moe;
  const QuantAct xq = block_input(c);  // s.u, normalised and quantised by HC_pre (layer_pass.cpp)
  MoeRoutedInput in = routed_input(c);
  in.x_q = xq.q;
  in.x_scale = xq.scale;
  in.x_fake = xq.fake;
  in.expert_base = w.w1.first;
  // The shared expert's branch joins here, not at the combine that reads it: the grouped GEMMs'
  // persistent grids assume the whole card, and with the branch beside them a batch-64 step took
  // 7 % longer (bench/results/2026-12-06-h100-graph-branches.md).
  if (branch_linears(c)) join_branch(c);
  moe_routed_runs(cfg, w.w1, w.w3, w.w2, ms, in, moe_row_runs(c), c.stream);
  if (!ms.picks) c.emit_bf16("moe.out", layer, s.ffn_out, {T, D});
}

void moe_combine_picks(const StepContext& c, int layer) {
  moe_combine_routed(c.m.cfg, c.s.moe, routed_input(c), c.stream);
  c.emit_bf16("moe.out", layer, c.s.ffn_out, {c.T, int(c.m.cfg.hidden_size)});
}

}  // namespace dsv4::cuda
