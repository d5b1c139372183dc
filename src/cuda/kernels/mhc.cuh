// Manifold-constrained hyper-connections (§3.1 HC_pre, §3.2 HC_post, §3.3 HC_head) for
// hc_mult = 4 streams. The sub-layers between pre and post live in their own kernel files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>

namespace dsv4::cuda {

constexpr int kHcStreams = 4;                                 // n (hc_mult); validated at load
constexpr int kHcMix = (2 + kHcStreams) * kHcStreams;         // 24: pre | post | comb (n×n)
constexpr int kMhcSplit = 256;                                // n·D elements per partial block

// HC_pre: v̂ = RMSNorm(vec(X)), m = fn·v̂, pre = sigmoid(scale0·m[0:n]+base) + eps,
// post = 2·sigmoid(scale1·m[n:2n]+base), C = Sinkhorn(scale2·m[2n:]+base), u = Σ_j pre_j X_j.
struct MhcPreParams {
  const __nv_bfloat16* x = nullptr;  // [n_tokens, n, D] bf16 streams (stream-major per token)
  const float* fn = nullptr;         // [24, n·D] fp32
  const float* base = nullptr;       // [24] fp32
  const float* scale = nullptr;      // [3] fp32
  float* partial = nullptr;          // [n_tokens, n·D/kMhcSplit, 25] scratch (24 dots + Σv²)
  __nv_bfloat16* u = nullptr;        // [n_tokens, D] bf16 block input
  float* post = nullptr;             // [n_tokens, n] fp32
  float* comb = nullptr;             // [n_tokens, n, n] fp32, C[a][b], a = source stream (row)
  int n_tokens = 0, D = 0;
  int sinkhorn_iters = 20;           // hc_sinkhorn_iters
  float hc_eps = 1e-6f, rms_eps = 1e-6f;
};

// Floats of scratch launch_mhc_pre (and launch_mhc_head) need for (n_tokens, D).
size_t mhc_pre_partial_floats(int n_tokens, int D);
// D % (kMhcSplit / n) == 0; n_tokens <= 65535 per launch (grid y), likewise for head and post.
void launch_mhc_pre(const MhcPreParams& p, cudaStream_t stream);

// HC_head (§3.3): m = fn·RMSNorm(vec(X)) (n rows), pre = sigmoid(scale·m + base) + eps,
// h = bf16(Σ_j pre_j X_j); no post, comb or Sinkhorn. Also the MTP block's head (§10).
struct MhcHeadParams {
  const __nv_bfloat16* x = nullptr;  // [n_tokens, n, D] bf16 final streams
  const float* fn = nullptr;         // [n, n·D] fp32 (hc_head_fn)
  const float* base = nullptr;       // [n] fp32
  const float* scale = nullptr;      // [1] fp32
  float* partial = nullptr;          // scratch, mhc_pre_partial_floats(n_tokens, D) floats
  __nv_bfloat16* h = nullptr;        // [n_tokens, D] bf16
  int n_tokens = 0, D = 0;
  float hc_eps = 1e-6f, rms_eps = 1e-6f;
};
// D % (kMhcSplit / n) == 0.
void launch_mhc_head(const MhcHeadParams& p, cudaStream_t stream);

// HC_post: out[b] = bf16(post_b · f + Σ_a C[a][b] · X_a), FP32 math (§3.2: Cᵀ·X, not C·X).
struct MhcPostParams {
  const __nv_bfloat16* f = nullptr;  // [n_tokens, D] bf16 sub-layer output
  const __nv_bfloat16* x = nullptr;  // [n_tokens, n, D] bf16 streams that entered the matching HC_pre
  const float* post = nullptr;       // [n_tokens, n]
  const float* comb = nullptr;       // [n_tokens, n, n]
  __nv_bfloat16* out = nullptr;      // [n_tokens, n, D] bf16; may alias x (each thread reads its
                                     // d of all n streams before writing them)
  int n_tokens = 0, D = 0;
};
void launch_mhc_post(const MhcPostParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
