// The MoE sub-layer on the GPU (§8): its step buffers and its entry point. The implementation is
// moe_step.cpp; the step it runs inside (StepContext, Scratch) is step.h's.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "cuda/device_arena.h"
#include "cuda/device_model.h"
#include "cuda/kernels/moe_dispatch.cuh"
#include "cuda/row_runs.h"
#include "model/config.h"

namespace dsv4::cuda {

struct StepContext;
struct DeviceLayer;

// What one rank computes of the routed experts (expert parallelism, docs/parallel.md):
// `experts` of them (0: all E), and whether its routed outputs leave the rank in pick order for a
// collective to sum (MoeScratch::picks) before the combine.
struct MoeShard {
  int experts = 0;
  bool picks = false;
  int host_experts = 0;  // the host tier's experts (host_experts.h), when it runs them on the GPU
};

// Buffers of the MoE sub-layer for passes of up to `rows` rows (device_arena.h: the same code
// counts and allocates). Routed-expert rows are in the dispatch plan's grouped order: up to
// rows·k of them, expert by expert.
struct MoeScratch {
  MoeScratch(const ModelConfig& cfg, int rows, DeviceArena& arena, const MoeShard& shard = {});
  int32_t* expert_idx;                // [rows, k] router picks
  float *router_logits, *expert_w;    // [rows, E], [rows, k]
  MoeDispatchPlan plan;               // the picks regrouped by expert (moe_dispatch.cuh)
  __nv_bfloat16 *g, *up, *h, *y;      // grouped: [rows·k, I] ×3, [rows·k, D]
  uint8_t *hq, *hqs;                  // grouped h for w2: [rows·k, I] e4m3, [rows·k, I/128] ue8m0
  __nv_bfloat16 *sg, *sup, *sh, *sy;  // shared expert: [rows, I] ×3, [rows, D]
  uint8_t *shq, *shqs;                // shared h for w2: [rows, I] e4m3, [rows, I/128] ue8m0
  __nv_bfloat16* shf;                 // [rows, I] shared h as BF16 fake-quant (BF16 shared w2)
  // BF16 routed experts only (nullptr otherwise): grouped h as BF16 fake-quant [rows·k, I].
  __nv_bfloat16* hf = nullptr;
  // MoeShard::picks only (nullptr otherwise): routed outputs in pick order [rows, k, D], +0 for
  // the picks of other ranks' experts; summed over ranks in place (collective.h), then combined.
  __nv_bfloat16* picks = nullptr;
  // MoeShard::host_experts only: the dispatch plan of a pass that runs the host tier's experts on
  // the GPU (their weights copied over for a pass of many rows; host_experts.h).
  MoeDispatchPlan host_plan{};
};

// x = c.s.u [T, D] (after ffn_norm) -> c.s.ffn_out [T, D] in three calls: moe_shared (the shared
// expert into s.moe.sy; on c.branch where step.h's branch_linears allows, joined back at the start
// of moe_experts), moe_route (the router: s.moe.expert_idx and expert_w), then moe_experts
// (moe_routed; §8). Between the last two the host tier starts its share of the picks
// (host_experts.h). Rows at or past *c.n_real cost no expert work; their output is the shared
// expert's. With MoeScratch::picks, ffn_out is not written: the rank's routed outputs are in
// s.moe.picks, and moe_combine_picks finishes the sub-layer once a collective has summed them.
void moe_shared(const StepContext& c, const DeviceLayer& w);
void moe_route(const StepContext& c, const DeviceLayer& w, int layer);
void moe_experts(const StepContext& c, const DeviceLayer& w, int layer);
void moe_combine_picks(const StepContext& c, int layer);

// The routed half of moe_step, given the router's picks (device pointers; also what
// tests/cuda/moe_step.cpp drives): dispatch plan, grouped w1/w3, SwiGLU × routing weight with
// the §12 quantisation for w2, grouped w2, and the combine with the shared expert's output.
struct MoeRoutedInput {
  const uint8_t* x_q = nullptr;          // [T, D] e4m3: the §12-quantised MoE input
  const uint8_t* x_scale = nullptr;      // [T, D/128] ue8m0
  const __nv_bfloat16* x_fake = nullptr; // [T, D] the same values in BF16 (BF16 experts only)
  const int32_t* expert_idx = nullptr;   // [T, k] router picks
  const float* expert_w = nullptr;       // [T, k] routing weights
  const int32_t* n_real = nullptr;       // device int32: rows >= it are padding; nullptr: T
  const __nv_bfloat16* shared = nullptr; // [T, D] shared expert output
  __nv_bfloat16* out = nullptr;          // [T, D]
  int T = 0;
  // Expert parallelism: the global id of w1/w3/w2's first expert (DeviceExperts::first), and with
  // MoeScratch::picks the outputs go there in pick order instead of being combined into `out`
  // (moe_combine_routed does that after the collective).
  int expert_base = 0;
  // With MoeScratch::picks: the picks of other experts keep what is there instead of +0 (a second
  // pass over the same picks: the host tier's experts after the GPU's own).
  bool keep_other_picks = false;
  // MXFP4 experts of these rows on the FP8 tensor cores (MoeGroupedParams::fp8_rows): set for a
  // prefill run of long-chunk rows, or for every row with fp8_expert_decode (moe_row_runs), never
  // for a launch because of its size.
  bool fp8 = false;
};
void moe_routed(const ModelConfig& cfg, const DeviceExperts& w1, const DeviceExperts& w3, const DeviceExperts& w2,
                MoeScratch& ms, const MoeRoutedInput& in, cudaStream_t stream);

// A pass's rows in runs of one expert arithmetic (row_runs.h). With
// CudaOptions::fp8_expert_prefill and MXFP4 experts, the rows of a prompt chunk long enough to
// make a prefill-shaped launch by itself (more than 16 grouped rows per expert of the model) are
// prefill runs, on the FP8 tensor cores; every other row runs on the F16 kernels. A row's class is
// its chunk's, so its bits do not depend on the rest of the step. With fp8_expert_decode as well,
// one FP8 run [0, T). Otherwise, or for a pass with padding rows (a decode graph's bucket), one
// F16 run [0, T).
std::vector<RowRun> moe_row_runs(const StepContext& c);
// moe_routed over each run's rows of `in` in turn (its per-row pointers and the pick-order
// outputs offset to the run), a prefill run setting MoeRoutedInput::fp8. Several runs come only
// from a pass without padding rows, so in.n_real is dropped for them.
void moe_routed_runs(const ModelConfig& cfg, const DeviceExperts& w1, const DeviceExperts& w3, const DeviceExperts& w2,
                     MoeScratch& ms, const MoeRoutedInput& in, const std::vector<RowRun>& runs, cudaStream_t stream);
// §8.4 from pick order: out = Σ picks (ascending expert id, FP32) + shared, as moe_routed's own
// combine adds the same values in the same order (so the result is bit-identical to one rank).
void moe_combine_routed(const ModelConfig& cfg, const MoeScratch& ms, const MoeRoutedInput& in, cudaStream_t stream);

}  // namespace dsv4::cuda
