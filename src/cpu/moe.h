// MoE sub-layer (§8): router (sqrt-softplus scores; hash or biased top-k selection; renormalised
// and scaled weights), routed SwiGLU experts with the clamp, and the clamped shared expert.
#pragma once

#include <cstdint>

#include "cpu/context.h"
#include "model/weights.h"

namespace dsv4 {

// One SwiGLU expert with the clamp (§8.2 / §8.3), routed or shared: xs [n, D] → y [n, D], the
// FP8 activation points and BF16 stores of ctx's numerics; row_weight [n] scales h before w2 when
// given (official numerics, §8.2). The CUDA backend's host tier (cuda/host_experts.h) runs the
// routed experts it keeps in host memory through the two halves below, which spread one expert
// over its threads by output rows; every output element is computed the same way either way.
void expert_forward(const CpuContext& ctx, const ExpertWeights& e, const float* xs, int64_t n,
                    const float* row_weight, float* y);
// h[:, i0 : i0 + ni] of h [n, I] = (silu(min(x·w1ᵀ, L)) · clamp(x·w3ᵀ, ±L)) (× row_weight).
void expert_hidden(const CpuContext& ctx, const ExpertWeights& e, const float* xs, int64_t n, const float* row_weight,
                   int64_t i0, int64_t ni, float* h);
// y[:, d0 : d0 + nd] of y [n, D] = h·w2ᵀ, from the whole h [n, I] (its §12 quantisation is per row).
void expert_output(const CpuContext& ctx, const ExpertWeights& e, const float* h, int64_t n, int64_t d0, int64_t nd,
                   float* y);

// x [T, D] (after ffn_norm), tokens [T] (hash routing) → out [T, D].
void moe_forward(const CpuContext& ctx, const MoEWeights& w, const LayerSpec& spec, int layer,
                 const float* x, const int32_t* tokens, int64_t T, float* out);

}  // namespace dsv4
