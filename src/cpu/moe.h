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
// routed experts it keeps in host memory through the steps below, which spread one expert over
// its threads by output rows; every output element is computed the same way either way.
void expert_forward(const CpuContext& ctx, const ExpertWeights& e, const float* xs, int64_t n,
                    const float* row_weight, float* y);
// The §12 activation point of an expert's matrices, in place on x [n, K]: FP8 blocks of 128 per
// row where ctx's numerics quantise activations. The halves below take inputs it has been applied
// to, so a caller that splits one expert into many calls quantises each input once, not per call.
void expert_act_quant(const CpuContext& ctx, float* x, int64_t n, int64_t K);
// h[:, i0 : i0 + ni] of h [n, I] = (silu(min(xq·w1ᵀ, L)) · clamp(xq·w3ᵀ, ±L)) (× row_weight);
// xq [n, D] through expert_act_quant.
void expert_hidden(const CpuContext& ctx, const ExpertWeights& e, const float* xq, int64_t n, const float* row_weight,
                   int64_t i0, int64_t ni, float* h);
// y[:, d0 : d0 + nd] of y [n, D] = hq·w2ᵀ, from the whole h [n, I] through expert_act_quant.
void expert_output(const CpuContext& ctx, const ExpertWeights& e, const float* hq, int64_t n, int64_t d0, int64_t nd,
                   float* y);

// x [T, D] (after ffn_norm), tokens [T] (hash routing) → out [T, D].
void moe_forward(const CpuContext& ctx, const MoEWeights& w, const LayerSpec& spec, int layer,
                 const float* x, const int32_t* tokens, int64_t T, float* out);

}  // namespace dsv4
