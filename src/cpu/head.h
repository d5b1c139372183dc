// Model ends (§2, §9): the embedding lookup that initialises the n streams, and the output head
// (HC_head collapse → final RMSNorm → lm_head). HC_head itself is in mhc.cpp.
#pragma once

#include <cstdint>

#include "cpu/context.h"
#include "model/weights.h"

namespace dsv4 {

// X [T, n, D]: every stream = embed[token_t] (§2 steps 1–2). Bad token ids → dsv4::Error.
void embed_tokens(const CpuContext& ctx, const WeightMatrix& embed, const int32_t* tokens,
                  int64_t T, float* X);

// logits [T, V] = head · RMSNorm_norm(HC_head(X)) for X [T, n, D] (§9).
void output_head(const CpuContext& ctx, const HyperConnWeights& hc, const WeightMatrix& norm,
                 const WeightMatrix& head, const float* X, int64_t T, float* logits);

}  // namespace dsv4
