// MoE sub-layer (§8): router (sqrt-softplus scores; hash or biased top-k selection; renormalised
// and scaled weights), routed SwiGLU experts with the clamp, and the clamped shared expert.
#pragma once

#include <cstdint>

#include "cpu/context.h"
#include "model/weights.h"

namespace dsv4 {

// x [T, D] (after ffn_norm), tokens [T] (hash routing) → out [T, D].
void moe_forward(const CpuContext& ctx, const MoEWeights& w, const LayerSpec& spec, int layer,
                 const float* x, const int32_t* tokens, int64_t T, float* out);

}  // namespace dsv4
