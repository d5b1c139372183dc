// mHC pre/post kernels and launchers; see mhc.cuh for the contract.
// HC_pre runs in two kernels so that decode (one token) reads the 1.5 MiB fn matrix with many
// blocks: (1) each block dots one kMhcSplit-wide slice of v with the 24 fn rows and sums v²;
// (2) one block per token reduces the slices in a fixed order (deterministic), then one thread
// does the 4×4 Sinkhorn and all threads collapse the streams into u. HC_head reuses kernel (1)
// with its n rows and a finish step without post/comb/Sinkhorn.
#include "cuda/kernels/mhc.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kN = kHcStreams;
constexpr int kSlots = kHcMix + 1;                // 24 dots + Σv² (HC_pre); HC_head uses n + 1
constexpr int kPartialThreads = kMhcSplit / 4;    // 4 consecutive elements per thread (float4 of fn)
constexpr int kPartialWarps = kPartialThreads / kWarpSize;
constexpr int kFinishThreads = 256;

// Shared by HC_pre (kRows = 24) and HC_head (kRows = n): slice dots of fn with v and Σv².
// partial: [n_tokens, n_splits, kRows + 1].
template <int kRows>
__global__ void __launch_bounds__(kPartialThreads)
mhc_partial_kernel(const __nv_bfloat16* __restrict__ x_all,  // [n_tokens, n, D]
                   const float* __restrict__ fn,             // [kRows, n·D]
                   float* __restrict__ partial, int D) {
  const int tok = blockIdx.y, split = blockIdx.x;
  const int64_t nD = int64_t(kN) * D;
  const int64_t k = int64_t(split) * kMhcSplit + 4 * threadIdx.x;
  const __nv_bfloat16* x = x_all + int64_t(tok) * nD + k;
  float v[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j] = __bfloat162float(x[j]);
  float acc[kRows + 1];
  acc[kRows] = v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + v[3] * v[3];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const float4 f = *reinterpret_cast<const float4*>(fn + r * nD + k);
    acc[r] = f.x * v[0] + f.y * v[1] + f.z * v[2] + f.w * v[3];
  }
  __shared__ float red[kPartialWarps][kRows + 1];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int r = 0; r <= kRows; ++r) {
    const float s = warp_sum(acc[r]);
    if (lane == 0) red[warp][r] = s;
  }
  __syncthreads();
  if (threadIdx.x <= kRows) {
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < kPartialWarps; ++w) s += red[w][threadIdx.x];
    partial[(int64_t(tok) * gridDim.x + split) * (kRows + 1) + threadIdx.x] = s;
  }
}

// Reduce one token's slices in a fixed order (deterministic): mix[0..kRows] = fn·v | Σv².
template <int kRows>
__device__ __forceinline__ void reduce_partials(const float* partial, int tok, int n_splits, float* mix) {
  if (threadIdx.x <= kRows) {
    const float* part = partial + int64_t(tok) * n_splits * (kRows + 1) + threadIdx.x;
    float s = 0.0f;
    for (int i = 0; i < n_splits; ++i) s += part[i * (kRows + 1)];
    mix[threadIdx.x] = s;
  }
  __syncthreads();
}

// u = bf16(Σ_j pre_j · X_j), FP32 accumulation (§3.1 step 8, §3.3).
__device__ __forceinline__ void collapse_streams(const __nv_bfloat16* x, const float* pre, __nv_bfloat16* u, int D) {
  for (int d = threadIdx.x; d < D; d += kFinishThreads) {
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < kN; ++j) s = fmaf(pre[j], __bfloat162float(x[int64_t(j) * D + d]), s);
    u[d] = __float2bfloat16_rn(s);
  }
}

__device__ __forceinline__ float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

__global__ void __launch_bounds__(kFinishThreads) mhc_pre_finish_kernel(MhcPreParams p, int n_splits) {
  const int tok = blockIdx.x;
  __shared__ float mix[kSlots];
  __shared__ float pre[kN];
  reduce_partials<kHcMix>(p.partial, tok, n_splits, mix);
  if (threadIdx.x == 0) {
    // m = fn·v̂ = (fn·v) · rsqrt(mean(v²) + eps): the reference's order (§3.1 step 2).
    const float r = rsqrtf(mix[kHcMix] / float(kN * p.D) + p.rms_eps);
    float m[kHcMix];
#pragma unroll
    for (int i = 0; i < kHcMix; ++i) m[i] = mix[i] * r;
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      pre[j] = sigmoid(p.scale[0] * m[j] + p.base[j]) + p.hc_eps;
      p.post[tok * kN + j] = 2.0f * sigmoid(p.scale[1] * m[kN + j] + p.base[kN + j]);
    }
    // Sinkhorn–Knopp (§3.1 step 7): row softmax + eps, column normalise, then iters−1 rounds of
    // (row normalise, column normalise); the last step is a column normalisation.
    float c[kN][kN];
#pragma unroll
    for (int a = 0; a < kN; ++a) {
      float mx = -INFINITY;
#pragma unroll
      for (int b = 0; b < kN; ++b) {
        c[a][b] = p.scale[2] * m[2 * kN + a * kN + b] + p.base[2 * kN + a * kN + b];
        mx = fmaxf(mx, c[a][b]);
      }
      float sum = 0.0f;
#pragma unroll
      for (int b = 0; b < kN; ++b) {
        c[a][b] = expf(c[a][b] - mx);
        sum += c[a][b];
      }
#pragma unroll
      for (int b = 0; b < kN; ++b) c[a][b] = c[a][b] / sum + p.hc_eps;
    }
    const auto normalise_columns = [&] {
#pragma unroll
      for (int b = 0; b < kN; ++b) {
        float sum = 0.0f;
#pragma unroll
        for (int a = 0; a < kN; ++a) sum += c[a][b];
#pragma unroll
        for (int a = 0; a < kN; ++a) c[a][b] /= sum + p.hc_eps;
      }
    };
    normalise_columns();
    for (int it = 1; it < p.sinkhorn_iters; ++it) {
#pragma unroll
      for (int a = 0; a < kN; ++a) {
        float sum = 0.0f;
#pragma unroll
        for (int b = 0; b < kN; ++b) sum += c[a][b];
#pragma unroll
        for (int b = 0; b < kN; ++b) c[a][b] /= sum + p.hc_eps;
      }
      normalise_columns();
    }
#pragma unroll
    for (int a = 0; a < kN; ++a)
#pragma unroll
      for (int b = 0; b < kN; ++b) p.comb[(tok * kN + a) * kN + b] = c[a][b];
  }
  __syncthreads();
  collapse_streams(p.x + int64_t(tok) * kN * p.D, pre, p.u + int64_t(tok) * p.D, p.D);
}

__global__ void __launch_bounds__(kFinishThreads) mhc_head_finish_kernel(MhcHeadParams p, int n_splits) {
  const int tok = blockIdx.x;
  __shared__ float mix[kN + 1];
  __shared__ float pre[kN];
  reduce_partials<kN>(p.partial, tok, n_splits, mix);
  if (threadIdx.x < kN) {  // §3.3: pre_j = sigmoid(scale·m_j + base_j) + eps, m = fn·RMSNorm(v)
    const float r = rsqrtf(mix[kN] / float(kN * p.D) + p.rms_eps);
    pre[threadIdx.x] = sigmoid(p.scale[0] * (mix[threadIdx.x] * r) + p.base[threadIdx.x]) + p.hc_eps;
  }
  __syncthreads();
  collapse_streams(p.x + int64_t(tok) * kN * p.D, pre, p.h + int64_t(tok) * p.D, p.D);
}

constexpr int kPostThreads = 256;

__global__ void __launch_bounds__(kPostThreads) mhc_post_kernel(MhcPostParams p) {
  const int tok = blockIdx.y;
  const int d = blockIdx.x * kPostThreads + threadIdx.x;
  if (d >= p.D) return;
  const int64_t base = int64_t(tok) * kN * p.D + d;
  float xa[kN];
#pragma unroll
  for (int a = 0; a < kN; ++a) xa[a] = __bfloat162float(p.x[base + int64_t(a) * p.D]);
  const float f = __bfloat162float(p.f[int64_t(tok) * p.D + d]);
  const float* c = p.comb + tok * kN * kN;
#pragma unroll
  for (int b = 0; b < kN; ++b) {
    float s = p.post[tok * kN + b] * f;
#pragma unroll
    for (int a = 0; a < kN; ++a) s = fmaf(c[a * kN + b], xa[a], s);
    p.out[base + int64_t(b) * p.D] = __float2bfloat16_rn(s);
  }
}

}  // namespace

size_t mhc_pre_partial_floats(int n_tokens, int D) {
  return size_t(n_tokens) * (size_t(kN) * D / kMhcSplit) * kSlots;  // ≥ what HC_head needs
}

void launch_mhc_pre(const MhcPreParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.x && p.fn && p.base && p.scale && p.partial && p.u && p.post && p.comb);
  DSV4_CHECK_MSG(p.D > 0 && (int64_t(kN) * p.D) % kMhcSplit == 0, "HC_pre needs n·D % ", kMhcSplit, " == 0, D=", p.D);
  DSV4_CHECK(p.sinkhorn_iters >= 1 && p.n_tokens >= 0 && p.n_tokens <= kMaxGridY);
  if (p.n_tokens == 0) return;
  const int n_splits = int(int64_t(kN) * p.D / kMhcSplit);
  mhc_partial_kernel<kHcMix><<<dim3(n_splits, p.n_tokens), kPartialThreads, 0, stream>>>(p.x, p.fn, p.partial, p.D);
  DSV4_CUDA_CHECK_LAUNCH();
  mhc_pre_finish_kernel<<<p.n_tokens, kFinishThreads, 0, stream>>>(p, n_splits);
  DSV4_CUDA_CHECK_LAUNCH();
}

void launch_mhc_head(const MhcHeadParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.x && p.fn && p.base && p.scale && p.partial && p.h);
  DSV4_CHECK_MSG(p.D > 0 && (int64_t(kN) * p.D) % kMhcSplit == 0, "HC_head needs n·D % ", kMhcSplit, " == 0, D=", p.D);
  DSV4_CHECK(p.n_tokens >= 0 && p.n_tokens <= kMaxGridY);
  if (p.n_tokens == 0) return;
  const int n_splits = int(int64_t(kN) * p.D / kMhcSplit);
  mhc_partial_kernel<kN><<<dim3(n_splits, p.n_tokens), kPartialThreads, 0, stream>>>(p.x, p.fn, p.partial, p.D);
  DSV4_CUDA_CHECK_LAUNCH();
  mhc_head_finish_kernel<<<p.n_tokens, kFinishThreads, 0, stream>>>(p, n_splits);
  DSV4_CUDA_CHECK_LAUNCH();
}

void launch_mhc_post(const MhcPostParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.f && p.x && p.post && p.comb && p.out && p.D > 0 && p.n_tokens >= 0 && p.n_tokens <= kMaxGridY);
  if (p.n_tokens == 0) return;
  mhc_post_kernel<<<dim3((p.D + kPostThreads - 1) / kPostThreads, p.n_tokens), kPostThreads, 0, stream>>>(p);
  DSV4_CUDA_CHECK_LAUNCH();
}

}  // namespace dsv4::cuda
