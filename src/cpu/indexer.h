// Lightning indexer (§6, CSA layers): its own key compressor (width di, m = 4), the query from the
// shared qr, head weights, scores Σ_h w_h·ReLU(q_h·k_j) and the causal top-k. Also the
// normalised Walsh–Hadamard transform of the official numerics. Attention over the selected
// entries is attention.cpp's.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/compressor.h"
#include "cpu/context.h"
#include "cpu/rope.h"
#include "model/weights.h"

namespace dsv4 {

// In place: x ← H_n·x / sqrt(n), Sylvester (natural) order as fast_hadamard_transform; n = 2^k.
void hadamard_normalised(float* x, int64_t n);

// Official numerics for one indexer vector (query head or key): Hadamard, then FP4 1×32 (§6, §12);
// official-bf16 rounds the rotated vector to BF16 before the FP4 cast.
void indexer_fake_quant(const CpuContext& ctx, float* v /* [di] */, int64_t di);

// Advances the indexer's compressor with x [T, D] (positions pos0 …) and selects, for every query
// t, the top min(K_top, visible) entries by score. topk [T, K_top] (out): entry indices, −1 pads.
// Layer `layer` is only used for trace names.
void indexer_select(const CpuContext& ctx, const IndexerWeights& w, const RopeTable& rope,
                    const float* x /* [T, D] */, const float* qr /* [T, Q] */, int64_t T,
                    int64_t pos0, CompressorState& keys, int layer, std::vector<int32_t>* topk);

}  // namespace dsv4
