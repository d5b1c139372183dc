// The MoE sub-layer on the GPU (§8): its step buffers and its entry point. The implementation is
// moe_step.cpp; the step it runs inside (StepContext, Scratch) is step.h's.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/device_arena.h"
#include "model/config.h"

namespace dsv4::cuda {

struct StepContext;
struct DeviceLayer;

// Buffers of the MoE sub-layer for passes of up to `rows` tokens (device_arena.h: the same code
// counts and allocates).
struct MoeScratch {
  MoeScratch(const ModelConfig& cfg, int rows, DeviceArena& arena);
  int32_t* expert_idx;                 // [rows, k]
  float *router_logits, *expert_w;     // [rows, E], [rows, k]
  __nv_bfloat16 *g, *up, *h, *y;       // [rows·k, I] ×3, [rows·k, D]
  __nv_bfloat16 *sg, *sup, *sh, *sy;   // shared expert: [rows, I] ×3, [rows, D]
  __nv_bfloat16* fake;                 // [rows·k, I] BF16 fake-quant input of BF16 w2 weights
  uint8_t *hq, *hqs;                   // [rows·k, I] e4m3, [rows·k, I/128] ue8m0
};

// x = c.s.u [T, D] (after ffn_norm) -> c.s.ffn_out [T, D]: router, shared expert, routed experts,
// the reference-order sum (§8).
void moe_step(const StepContext& c, const DeviceLayer& w, int layer);

}  // namespace dsv4::cuda
