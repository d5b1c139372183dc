// One decoder block (§2 step 3, §7.1): HC_pre → attn_norm → attention → HC_post, then
// HC_pre → ffn_norm → MoE → HC_post, on the n streams. Shared by the main layers and the MTP block.
#pragma once

#include <cstdint>

#include "cpu/attention.h"
#include "cpu/context.h"
#include "cpu/rope.h"
#include "model/weights.h"

namespace dsv4 {

// X [T, n, D] in/out; tokens [T] for hash routing; positions pos0 … pos0+T−1.
void decoder_layer(const CpuContext& ctx, const LayerWeights& w, int layer, const RopeTable& rope,
                   float* X, const int32_t* tokens, int64_t T, int64_t pos0, AttentionState& st);

}  // namespace dsv4
