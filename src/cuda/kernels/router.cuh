// MoE router (§8.1): sqrt-softplus scores, biased top-k (score-routed layers) or token-id hash
// (hash-routed layers), weights renormalised over the selection × routed_scaling_factor.
// The gate logits come from step.h's linear_f32; the picks go to moe_dispatch.cuh.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

constexpr int kRouterMaxExperts = 512;  // E ≤ 32 lanes × 16 registers (Flash 256, Pro 384)
constexpr int kRouterMaxTopK = 16;

// s = sqrt(softplus(logit)); idx = top-k(s + bias) or tid2eid[token]; w_i = s_idx_i / Σ s · scale.
struct RouterParams {
  const float* logits = nullptr;     // [n_tokens, E] fp32 x·gateᵀ
  const float* bias = nullptr;       // [E] fp32 selection bias (score routing), or nullptr
  const int32_t* tid2eid = nullptr;  // [vocab, k] hash table (hash routing), or nullptr
  const int32_t* token_ids = nullptr;// [n_tokens], with tid2eid
  int32_t* expert_idx = nullptr;     // [n_tokens, k]; score routing lists experts best first
  float* expert_weight = nullptr;    // [n_tokens, k] fp32
  int n_tokens = 0, E = 0, k = 0, vocab = 0;
  float route_scale = 1.0f;          // routed_scaling_factor
};

// A token id outside [0, vocab) or a table entry outside [0, E) yields idx −1 and NaN weights for
// that token (visible downstream; never an out-of-bounds read).
void launch_router(const RouterParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
