// Router kernel and launcher; see router.cuh for the contract.
// One warp per token; lane l holds the scores of experts l, l+32, … in registers (compile-time
// indexed), and top-k is k rounds of a warp arg-max (ties -> lower expert index).
#include "cuda/kernels/router.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 128;  // 4 tokens per block
constexpr int kPerLane = kRouterMaxExperts / kWarpSize;

__device__ __forceinline__ float sqrt_softplus(float z) {
  // torch softplus (beta 1, threshold 20): z when z > 20, else log1p(exp(z)).
  return sqrtf(z > 20.0f ? z : log1pf(expf(z)));
}

__global__ void __launch_bounds__(kThreads) router_kernel(RouterParams p) {
  wait_for_prior_grids();
  const int tok = blockIdx.x * (kThreads / kWarpSize) + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (tok >= p.n_tokens) return;
  const float* logits = p.logits + int64_t(tok) * p.E;
  int32_t* out_idx = p.expert_idx + int64_t(tok) * p.k;
  float* out_w = p.expert_weight + int64_t(tok) * p.k;

  float score[kPerLane], key[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int e = lane + j * kWarpSize;
    score[j] = e < p.E ? sqrt_softplus(logits[e]) : 0.0f;
    key[j] = e < p.E ? score[j] + (p.bias ? p.bias[e] : 0.0f) : -INFINITY;
  }

  float picked_score = 0.0f;  // lane i < k keeps the score of pick i
  int picked_idx = -1;
  bool bad = false;
  if (p.tid2eid) {
    const int t = p.token_ids[tok];
    bad = t < 0 || t >= p.vocab;
    if (!bad && lane < p.k) {
      const int e = p.tid2eid[int64_t(t) * p.k + lane];
      if (e >= 0 && e < p.E) picked_idx = e; else bad = true;
    }
    // s_e lives in lane e % 32, register e / 32: broadcast each register slot and pick.
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const float s = __shfl_sync(kFullMask, score[j], picked_idx >= 0 ? picked_idx % kWarpSize : 0);
      if (picked_idx >= 0 && picked_idx / kWarpSize == j) picked_score = s;
    }
  } else {
    unsigned taken = 0;  // bit j: this lane's expert lane + 32j already picked
    for (int i = 0; i < p.k; ++i) {
      float best = -INFINITY;
      int best_e = INT32_MAX;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const int e = lane + j * kWarpSize;
        if (!(taken >> j & 1u) && e < p.E && (key[j] > best || (key[j] == best && e < best_e))) {
          best = key[j];
          best_e = e;
        }
      }
#pragma unroll
      for (int o = kWarpSize / 2; o > 0; o /= 2) {
        const float ob = __shfl_xor_sync(kFullMask, best, o);
        const int oe = __shfl_xor_sync(kFullMask, best_e, o);
        if (ob > best || (ob == best && oe < best_e)) { best = ob; best_e = oe; }
      }
      // Winner lane marks it taken and broadcasts its unbiased score to the slot's lane.
      float s_win = 0.0f;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j)
        if (best_e == lane + j * kWarpSize) { taken |= 1u << j; s_win = score[j]; }
      s_win = __shfl_sync(kFullMask, s_win, best_e == INT32_MAX ? 0 : best_e % kWarpSize);
      if (best_e == INT32_MAX) bad = true;  // NaN logits: nothing compares greater than −inf
      if (lane == i) { picked_idx = best_e; picked_score = s_win; }
    }
  }
  bad = __any_sync(kFullMask, bad);
  const float sum = warp_sum(lane < p.k ? picked_score : 0.0f);
  if (lane < p.k) {
    out_idx[lane] = bad ? -1 : picked_idx;
    out_w[lane] = bad ? __int_as_float(0x7fc00000) : picked_score / sum * p.route_scale;
  }
}

}  // namespace

void launch_router(const RouterParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.logits && p.expert_idx && p.expert_weight && p.n_tokens >= 0);
  DSV4_CHECK_MSG(p.E >= 1 && p.E <= kRouterMaxExperts && p.k >= 1 && p.k <= kRouterMaxTopK && p.k <= p.E,
                 "E=", p.E, " k=", p.k);
  DSV4_CHECK(!p.tid2eid || (p.token_ids && p.vocab > 0));
  if (p.n_tokens == 0) return;
  const int per_block = kThreads / kWarpSize;
  launch_kernel(router_kernel, (p.n_tokens + per_block - 1) / per_block, kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
