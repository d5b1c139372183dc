// MoE dispatch plan (design.md "MoE dispatch plan", §8): the router's [T, k] picks regrouped by
// expert on the device — counts, offsets, and the permutation both ways — so that grouped expert
// kernels (moe_grouped_gemm.cuh) read each expert once per step. Routing is router.cuh's.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/device_arena.h"

namespace dsv4::cuda {

// The plan of one step, all device arrays, for up to max_rows rows × k picks and E experts.
// A selection is one (row t, pick slot i) with a valid expert id (0 <= e < E, the id relative to
// MoeDispatchParams::expert_base) on a real row (t < *n_real). Selections are laid out expert by expert ("grouped order"), ascending expert id,
// and within one expert by ascending (t, i): the layout depends only on the picks, never on
// timing, so a row's grouped position is deterministic. The same structure is what an
// expert-parallel all-to-all would send between GPUs (counts per expert, rows in grouped order).
struct MoeDispatchPlan {
  int32_t* counts = nullptr;      // [E] selections of expert e (its grouped rows)
  int32_t* offsets = nullptr;     // [E + 1] exclusive scan of counts; offsets[E] = n_sel
  int32_t* sel_row = nullptr;     // [max_rows·k] grouped position j -> row t (j < n_sel)
  int32_t* sel_slot = nullptr;    // [max_rows·k] grouped position j -> pick slot i
  float* sel_weight = nullptr;    // [max_rows·k] routing weight of selection j (router's weight)
  int32_t* pos_of = nullptr;      // [max_rows·k] (t·k + i) -> grouped position j, or −1 (padding
                                  // row or invalid pick)
  int E = 0, max_rows = 0, k = 0;

  // Carves the arrays from an arena (device_arena.h: the same call counts and allocates).
  static MoeDispatchPlan carve(DeviceArena& arena, int E, int max_rows, int k);
};

struct MoeDispatchParams {
  const int32_t* expert_idx = nullptr;     // [T, k] router picks; < 0 or >= E: invalid (skipped)
  const float* expert_weight = nullptr;    // [T, k] routing weights
  const int32_t* n_real = nullptr;         // device int32: rows >= *n_real are padding; nullptr: T
  int T = 0;                               // rows of this pass (T <= plan.max_rows)
  // Expert parallelism: this rank holds experts [expert_base, expert_base + plan.E) of the model;
  // a pick of expert g is a selection of local expert g − expert_base, other picks are left out
  // (another rank computes them). 0 when one rank holds them all.
  int expert_base = 0;
  MoeDispatchPlan plan;
};

// Two launches: counts + scan (one block), then one warp per expert fills its positions in row
// order (ballots over the pick list). Graph-capturable: no host sync, shapes static.
// 1 <= E <= kDispatchMaxExperts, 1 <= k, 0 <= T <= max_rows, T·k <= 2^31 − 1.
constexpr int kDispatchMaxExperts = 1024;
void launch_moe_dispatch(const MoeDispatchParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
