// Manifold-constrained hyper-connections (§3.1 HC_pre, §3.2 HC_post, §3.3 HC_head) for
// hc_mult = 4 streams. The sub-layers between pre and post live in their own kernel files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace dsv4::cuda {

constexpr int kHcStreams = 4;                                 // n (hc_mult); validated at load
constexpr int kHcMix = (2 + kHcStreams) * kHcStreams;         // 24: pre | post | comb (n×n)
constexpr int kMhcSplit = 256;                                // n·D elements per partial block
constexpr int kMhcFinishThreads = 512;  // threads of the per-token finish block (the RMSNorm's Σu² order)
constexpr int kMhcMaxD = 8192;          // D a finish block holds in registers (Flash 4096, Pro 7168)

// HC_pre: v̂ = RMSNorm(vec(X)), m = fn·v̂, pre = sigmoid(scale0·m[0:n]+base) + eps,
// post = 2·sigmoid(scale1·m[n:2n]+base), C = Sinkhorn(scale2·m[2n:]+base), u = Σ_j pre_j X_j.
// Fused (norm_weight set): u is the sub-layer's RMSNorm of the block input (attn_norm /
// ffn_norm), u = bf16(RMSNorm_w(bf16(Σ_j pre_j X_j))) with eps rms_eps — the reference's BF16
// block input normalised in FP32 — and with q set also its FP8 1×128 quantisation (§12), as
// rmsnorm.cuh would produce from the unfused u.
struct MhcPreParams {
  const __nv_bfloat16* x = nullptr;  // [n_tokens, n, D] bf16 streams (stream-major per token)
  const float* fn = nullptr;         // [24, n·D] fp32
  const float* base = nullptr;       // [24] fp32
  const float* scale = nullptr;      // [3] fp32
  float* partial = nullptr;          // [n_tokens, n·D/kMhcSplit, 25] scratch (24 dots + Σv²)
  __nv_bfloat16* u = nullptr;        // [n_tokens, D] bf16 block input (normalised when fused)
  float* post = nullptr;             // [n_tokens, n] fp32
  float* comb = nullptr;             // [n_tokens, n, n] fp32, C[a][b], a = source stream (row)
  const __nv_bfloat16* norm_weight = nullptr;  // [D] bf16: fuse the sub-layer RMSNorm; nullptr: plain u
  uint8_t* q = nullptr;              // [n_tokens, D] e4m3 of the normalised u, or nullptr (needs norm_weight)
  uint8_t* q_scale = nullptr;        // [n_tokens, D/128] ue8m0, with q
  __nv_bfloat16* fake = nullptr;     // [n_tokens, D] bf16 q·s (act_quant.cuh's fake), or nullptr (needs q)
  int n_tokens = 0, D = 0;
  int sinkhorn_iters = 20;           // hc_sinkhorn_iters
  float hc_eps = 1e-6f, rms_eps = 1e-6f;
};

// Floats of scratch launch_mhc_pre (and launch_mhc_head) need for (n_tokens, D).
size_t mhc_pre_partial_floats(int n_tokens, int D);
// D % (kMhcSplit / n) == 0, D <= kMhcMaxD (and D % 128 == 0 with q). Every token's arithmetic is the same for any
// n_tokens: a row of a batch equals the row computed alone, bit for bit.
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
  const __nv_bfloat16* norm_weight = nullptr;  // [D] bf16: fuse the final norm (§9), h = bf16(RMSNorm_w(h))
  int n_tokens = 0, D = 0;
  float hc_eps = 1e-6f, rms_eps = 1e-6f;
};
// D % (kMhcSplit / n) == 0, D <= kMhcMaxD.
void launch_mhc_head(const MhcHeadParams& p, cudaStream_t stream);

// HC_post: out[b] = bf16(post_b · f + Σ_a C[a][b] · X_a), FP32 math (§3.2: Cᵀ·X, not C·X).
// n_tokens ≤ 65535 per launch (grid y).
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
