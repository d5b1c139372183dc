// Manifold-constrained hyper-connections (§3): HC_pre (weights, Sinkhorn, collapse), HC_post
// (expand + mix) and HC_head (final collapse). The sub-layers between them live elsewhere.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/context.h"
#include "model/weights.h"

namespace dsv4 {

struct HcMix {
  std::vector<float> post;  // [T, n]
  std::vector<float> comb;  // [T, n, n] C[a][b]: a = source stream, b = destination (§3.2)
};

// §3.1 step 7: in: M [n, n] logits (row a = source); out: C, the Sinkhorn projection.
void sinkhorn(float* m /* [n, n] */, int64_t n, int64_t iters, float eps);

// §3.1: X [T, n, D] → u [T, D] (block input), mix (post, comb) for hc_post.
void hc_pre(const CpuContext& ctx, const HyperConnWeights& w, const float* X, int64_t T,
            float* u, HcMix* mix);

// §3.2: X [T, n, D] in/out: X'_b = post_b·f + Σ_a C[a][b]·X_a, f [T, D].
void hc_post(const CpuContext& ctx, const float* f, const HcMix& mix, float* X, int64_t T);

// §3.3: X [T, n, D] → h [T, D].
void hc_head(const CpuContext& ctx, const HyperConnWeights& w, const float* X, int64_t T,
             float* h);

}  // namespace dsv4
