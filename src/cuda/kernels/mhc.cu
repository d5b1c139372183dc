// mHC pre/post kernels and launchers; see mhc.cuh for the contract.
// HC_pre runs in two kernels. (1) The projection [tokens, n·D] × [n·D, 24] in FP32 (and Σv²):
// a block takes 32 tokens × one kMhcSplit-wide slice of n·D, so each fn value it loads serves 32
// tokens (decode still spreads the 1.5 MiB fn over n·D/kMhcSplit blocks); it writes per-slice
// partial sums. (2) One block per token adds the slices (fixed order), does the 4×4 Sinkhorn on
// 16 lanes of one warp (row sums over lane bits 0–1, column sums over bits 2–3), and collapses
// the streams into u — optionally normalised and quantised for the sub-layer's first GEMM.
// (2) is one serial chain per token, so at decode its latency is what counts: 512 threads hold
// one or two 8-element chunks each, whose four stream loads are issued on entry and land while
// the partials are reduced and the Sinkhorn runs; u stays in registers between the norm's two
// passes (bench/results/2026-12-04-h200-pdl.md: 15.8 µs per call before, one block of 128).
// HC_head reuses (1) with its n rows and (2) without post/comb/Sinkhorn. No launch shape depends
// on the token count, so a token's arithmetic does not depend on the batch it is in.
#include "cuda/kernels/mhc.cuh"

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kN = kHcStreams;
constexpr int kSlots = kHcMix + 1;        // 24 dots + Σv² (HC_pre); HC_head uses n + 1
constexpr int kMixThreads = 256;
constexpr int kMixWarps = kMixThreads / kWarpSize;
constexpr int kMixTokens = 32;            // tokens per projection block: each fn load serves them all
constexpr int kTokensPerThread = 4;
constexpr int kRun = 8;                   // consecutive n·D elements per thread: one 16-byte x load
constexpr int kKGroups = kMhcSplit / kRun;  // 32 threads along one slice
static_assert(kKGroups * (kMixTokens / kTokensPerThread) == kMixThreads, "one thread per (k group, token group)");
static_assert(kKGroups == 4 * kMixWarps, "a warp holds 4 k groups × 8 token groups");
constexpr int kFinishThreads = kMhcFinishThreads;
constexpr int kFinishWarps = kFinishThreads / kWarpSize;
constexpr int kChunk = 8;                 // BF16 elements per 16-byte access in the collapse
constexpr int kChunksPerThread = kMhcMaxD / (kChunk * kFinishThreads);  // register-resident chunks
constexpr int kChunksPerQuantBlock = kActBlockSize / kChunk;  // 16 lanes = one 1×128 block
static_assert(kChunksPerQuantBlock == kWarpSize / 2 && kFinishThreads % kWarpSize == 0, "a half-warp per block");
static_assert(kChunksPerThread * kChunk * kFinishThreads == kMhcMaxD, "kMhcMaxD is whole chunks per thread");
static_assert(kFinishWarps == 16, "the Σu² tree below adds 16 warps");

// (1): partial[t][split][r] = Σ_{k in slice} fn[r][k]·v_t[k] (r < kRows), [kRows] = Σ v_t[k]².
// Thread (warp w, lane l): tokens 4·(l%8) … +3 of the block's 32, k group 4w + l/8 (8 elements).
// Summation: 8 sequential FMAs, a 2-level shuffle tree over the warp's 4 k groups, a 3-level tree
// over the 8 warps — 13 adds deep, whatever the token count.
template <int kRows>
__global__ void __launch_bounds__(kMixThreads)
mhc_mix_kernel(const __nv_bfloat16* __restrict__ x_all,  // [T, n, D]
               const float* __restrict__ fn,             // [kRows, n·D]
               float* __restrict__ partial,              // [T, n_splits, kRows + 1]
               int D, int T) {
  wait_for_prior_grids();
  constexpr int kS = kRows + 1;
  const int split = blockIdx.x, n_splits = gridDim.x, tok0 = blockIdx.y * kMixTokens;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int tg = lane % 8, kg = warp * 4 + lane / 8;
  const int64_t nD = int64_t(kN) * D, k0 = int64_t(split) * kMhcSplit + kg * kRun;

  float v[kTokensPerThread][kRun];
#pragma unroll
  for (int t = 0; t < kTokensPerThread; ++t) {
    const int tok = tok0 + tg * kTokensPerThread + t;
    uint4 raw = make_uint4(0, 0, 0, 0);
    if (tok < T) raw = __ldg(reinterpret_cast<const uint4*>(x_all + int64_t(tok) * nD + k0));
    bf16x8_to_floats(raw, v[t]);
  }
  float acc[kTokensPerThread][kS];
#pragma unroll
  for (int t = 0; t < kTokensPerThread; ++t)
#pragma unroll
    for (int r = 0; r < kS; ++r) acc[t][r] = 0.0f;
  if (tok0 + tg * kTokensPerThread < T) {  // tokens ascend within the group: the first decides
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float4 f0 = __ldg(reinterpret_cast<const float4*>(fn + r * nD + k0));
      const float4 f1 = __ldg(reinterpret_cast<const float4*>(fn + r * nD + k0 + 4));
      const float f[kRun] = {f0.x, f0.y, f0.z, f0.w, f1.x, f1.y, f1.z, f1.w};
#pragma unroll
      for (int t = 0; t < kTokensPerThread; ++t)
#pragma unroll
        for (int i = 0; i < kRun; ++i) acc[t][r] = fmaf(f[i], v[t][i], acc[t][r]);
    }
#pragma unroll
    for (int t = 0; t < kTokensPerThread; ++t)
#pragma unroll
      for (int i = 0; i < kRun; ++i) acc[t][kRows] = fmaf(v[t][i], v[t][i], acc[t][kRows]);
  }
  // The warp's 4 k groups of one token group are lanes l, l^8, l^16, l^24.
#pragma unroll
  for (int t = 0; t < kTokensPerThread; ++t)
#pragma unroll
    for (int r = 0; r < kS; ++r) {
      acc[t][r] += __shfl_xor_sync(kFullMask, acc[t][r], 8);
      acc[t][r] += __shfl_xor_sync(kFullMask, acc[t][r], 16);
    }
  __shared__ float red[kMixWarps][kMixTokens][kS];
  if (lane < 8)
#pragma unroll
    for (int t = 0; t < kTokensPerThread; ++t)
#pragma unroll
      for (int r = 0; r < kS; ++r) red[warp][tg * kTokensPerThread + t][r] = acc[t][r];
  __syncthreads();
  static_assert(kMixWarps == 8, "the tree below adds 8 warps");
  for (int i = threadIdx.x; i < kMixTokens * kS; i += kMixThreads) {
    const int tl = i / kS, r = i % kS, tok = tok0 + tl;
    if (tok >= T) continue;
    const float a = (red[0][tl][r] + red[1][tl][r]) + (red[2][tl][r] + red[3][tl][r]);
    const float b = (red[4][tl][r] + red[5][tl][r]) + (red[6][tl][r] + red[7][tl][r]);
    partial[(int64_t(tok) * n_splits + split) * kS + r] = a + b;
  }
}

// (2a): mix[0..kRows] = Σ over slices of one token's partials: slot s on warp s % 4, the
// slices spread over the lanes (≤ ceil(n_splits/32) sequential adds), then a 5-level tree.
template <int kRows>
__device__ __forceinline__ void reduce_partials(const float* partial, int tok, int n_splits, float* mix) {
  constexpr int kS = kRows + 1;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const float* part = partial + int64_t(tok) * n_splits * kS;
  for (int s = warp; s < kS; s += kFinishWarps) {
    float v = 0.0f;
    for (int i = lane; i < n_splits; i += kWarpSize) v += part[int64_t(i) * kS + s];
    v = warp_sum(v);
    if (lane == 0) mix[s] = v;
  }
  __syncthreads();
}

__device__ __forceinline__ float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

// Sum over the 4 lanes whose lane bits `bit`, `2·bit` vary: (a+b)+(c+d), the same bits in each
// of the 4 lanes (FP32 addition is commutative).
__device__ __forceinline__ float sum4(float v, int bit) {
  v += __shfl_xor_sync(kFullMask, v, bit);
  return v + __shfl_xor_sync(kFullMask, v, 2 * bit);
}

struct CollapseOut {
  __nv_bfloat16* u;             // [D]
  const __nv_bfloat16* weight;  // [D] or nullptr: no norm
  uint8_t* q;                   // [D] or nullptr
  uint8_t* q_scale;             // [D/128]
  __nv_bfloat16* fake;          // [D] or nullptr
  float eps;
};

// This thread's chunks of one token's streams: chunk c = threadIdx.x + k·kFinishThreads (k <
// kChunksPerThread), raw[k][j] = elements 8c .. 8c+7 of stream j (zero past D).
struct StreamChunks {
  uint4 raw[kChunksPerThread][kN];
};
__device__ __forceinline__ void load_stream_chunks(const __nv_bfloat16* x, int D, StreamChunks& s) {
  const int n_chunks = D / kChunk;
#pragma unroll
  for (int k = 0; k < kChunksPerThread; ++k) {
    const int c = threadIdx.x + k * kFinishThreads;
#pragma unroll
    for (int j = 0; j < kN; ++j)
      s.raw[k][j] = c < n_chunks ? __ldg(reinterpret_cast<const uint4*>(x + int64_t(j) * D) + c) : make_uint4(0, 0, 0, 0);
  }
}

// (2b): u = bf16(Σ_j pre_j·X_j) (FP32 FMAs in stream order, §3.1 step 8 / §3.3). With a weight:
// the RMSNorm of that BF16 u — Σu² per thread (8 FMAs per chunk, ≤ kChunksPerThread chunks), a
// 5-level warp tree, a 4-level tree over the 16 warps — then bf16((u·r)·w) as rmsnorm.cu computes
// it, with the 1×128 quantisation of the result on the half-warp that holds each block.
__device__ __forceinline__ void collapse(const StreamChunks& xs, const float* pre, int D, const CollapseOut& o) {
  const int n_chunks = D / kChunk, lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  float u[kChunksPerThread][kChunk];
#pragma unroll
  for (int k = 0; k < kChunksPerThread; ++k) {
    float x[kN][kChunk];
#pragma unroll
    for (int j = 0; j < kN; ++j) bf16x8_to_floats(xs.raw[k][j], x[j]);
#pragma unroll
    for (int e = 0; e < kChunk; ++e) {
      float s = 0.0f;
#pragma unroll
      for (int j = 0; j < kN; ++j) s = fmaf(pre[j], x[j][e], s);
      u[k][e] = __bfloat162float(__float2bfloat16_rn(s));
    }
  }
  if (!o.weight) {
#pragma unroll
    for (int k = 0; k < kChunksPerThread; ++k) {
      const int c = threadIdx.x + k * kFinishThreads;
      if (c < n_chunks) reinterpret_cast<uint4*>(o.u)[c] = floats_to_bf16x8(u[k]);
    }
    return;
  }
  float ss = 0.0f;  // chunks past D are zero
#pragma unroll
  for (int k = 0; k < kChunksPerThread; ++k)
#pragma unroll
    for (int e = 0; e < kChunk; ++e) ss = fmaf(u[k][e], u[k][e], ss);
  __shared__ float warp_ss[kFinishWarps];
  ss = warp_sum(ss);
  if (lane == 0) warp_ss[warp] = ss;
  __syncthreads();
  float w8[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) w8[i] = warp_ss[2 * i] + warp_ss[2 * i + 1];
  const float total = ((w8[0] + w8[1]) + (w8[2] + w8[3])) + ((w8[4] + w8[5]) + (w8[6] + w8[7]));
  const float r = rsqrtf(total / float(D) + o.eps);
  // Half-warp masks: with q, D % 128 == 0, so a block's 16 lanes are all in or all out.
  const unsigned half_mask = 0xffffu << (lane & 16);
#pragma unroll
  for (int k = 0; k < kChunksPerThread; ++k) {
    const int c = threadIdx.x + k * kFinishThreads;
    if (c >= n_chunks) continue;
    float w[kChunk], y[kChunk];
    bf16x8_to_floats(__ldg(reinterpret_cast<const uint4*>(o.weight) + c), w);
#pragma unroll
    for (int e = 0; e < kChunk; ++e) y[e] = __bfloat162float(__float2bfloat16_rn(u[k][e] * r * w[e]));
    reinterpret_cast<uint4*>(o.u)[c] = floats_to_bf16x8(y);
    if (!o.q) continue;
    // §12 FP8 1×128 of the BF16 y: 2^ceil(log2(max(amax, 1e-4)/448)), RNE to E4M3, ±448.
    float amax = 0.0f;
#pragma unroll
    for (int e = 0; e < kChunk; ++e) amax = fmaxf(amax, fabsf(y[e]));
#pragma unroll
    for (int off = 1; off < kChunksPerQuantBlock; off *= 2) amax = fmaxf(amax, __shfl_xor_sync(half_mask, amax, off));
    const uint8_t sb = act_scale_byte(amax);
    const float inv = inv_e8m0(sb), s = e8m0_to_float(sb);
    uint32_t packed[2] = {0, 0};
    float fq[kChunk];
#pragma unroll
    for (int e = 0; e < kChunk; ++e) {
      const uint8_t b = float_to_e4m3(y[e] * inv);
      packed[e / 4] |= uint32_t(b) << (8 * (e % 4));
      if (o.fake) {
        const float2 f = e4m3x2_to_float2(uint16_t(b));
        fq[e] = f.x * s;  // exact: an E4M3 value times a power of two fits BF16
      }
    }
    reinterpret_cast<uint2*>(o.q)[c] = make_uint2(packed[0], packed[1]);
    if (lane % kChunksPerQuantBlock == 0) o.q_scale[c / kChunksPerQuantBlock] = sb;
    if (o.fake) reinterpret_cast<uint4*>(o.fake)[c] = floats_to_bf16x8(fq);
  }
}

__global__ void __launch_bounds__(kFinishThreads) mhc_pre_finish_kernel(MhcPreParams p, int n_splits) {
  wait_for_prior_grids();
  const int tok = blockIdx.x, lane = threadIdx.x % kWarpSize;
  StreamChunks xs;  // in flight while the partials are reduced and the Sinkhorn runs
  load_stream_chunks(p.x + int64_t(tok) * kN * p.D, p.D, xs);
  __shared__ float mix[kSlots];
  __shared__ float pre[kN];
  reduce_partials<kHcMix>(p.partial, tok, n_splits, mix);
  if (threadIdx.x < kWarpSize) {
    // m = fn·v̂ = (fn·v) · rsqrt(mean(v²) + eps): the reference's order (§3.1 step 2).
    const float r = rsqrtf(mix[kHcMix] / float(kN * p.D) + p.rms_eps);
    if (lane < kN) pre[lane] = sigmoid(p.scale[0] * (mix[lane] * r) + p.base[lane]) + p.hc_eps;
    else if (lane < 2 * kN)
      p.post[int64_t(tok) * kN + lane - kN] = 2.0f * sigmoid(p.scale[1] * (mix[lane] * r) + p.base[lane]);
    // Sinkhorn–Knopp (§3.1 step 7) with C[a][b] on lane 4a + b (lanes 16–31 mirror 0–15): row
    // softmax + eps, column normalise, then iters−1 rounds of (row, column) normalisation.
    const int i = lane & 15;
    float c = p.scale[2] * (mix[2 * kN + i] * r) + p.base[2 * kN + i];
    float mx = fmaxf(c, __shfl_xor_sync(kFullMask, c, 1));
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
    c = expf(c - mx);
    c = c / sum4(c, 1) + p.hc_eps;
    c /= sum4(c, 4) + p.hc_eps;
    for (int it = 1; it < p.sinkhorn_iters; ++it) {
      c /= sum4(c, 1) + p.hc_eps;
      c /= sum4(c, 4) + p.hc_eps;
    }
    if (lane < kN * kN) p.comb[int64_t(tok) * kN * kN + i] = c;
  }
  __syncthreads();
  const int64_t t = tok;
  collapse(xs, pre, p.D,
           CollapseOut{p.u + t * p.D, p.norm_weight, p.q ? p.q + t * p.D : nullptr,
                       p.q ? p.q_scale + t * (p.D / kActBlockSize) : nullptr, p.fake ? p.fake + t * p.D : nullptr,
                       p.rms_eps});
}

__global__ void __launch_bounds__(kFinishThreads) mhc_head_finish_kernel(MhcHeadParams p, int n_splits) {
  wait_for_prior_grids();
  const int tok = blockIdx.x;
  StreamChunks xs;
  load_stream_chunks(p.x + int64_t(tok) * kN * p.D, p.D, xs);
  __shared__ float mix[kN + 1];
  __shared__ float pre[kN];
  reduce_partials<kN>(p.partial, tok, n_splits, mix);
  if (threadIdx.x < kN) {  // §3.3: pre_j = sigmoid(scale·m_j + base_j) + eps, m = fn·RMSNorm(v)
    const float r = rsqrtf(mix[kN] / float(kN * p.D) + p.rms_eps);
    pre[threadIdx.x] = sigmoid(p.scale[0] * (mix[threadIdx.x] * r) + p.base[threadIdx.x]) + p.hc_eps;
  }
  __syncthreads();
  const int64_t t = tok;
  collapse(xs, pre, p.D,
           CollapseOut{p.h + t * p.D, p.norm_weight, nullptr, nullptr, nullptr, p.rms_eps});
}

constexpr int kPostThreads = 256;

__global__ void __launch_bounds__(kPostThreads) mhc_post_kernel(MhcPostParams p) {
  wait_for_prior_grids();
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
  DSV4_CHECK_MSG(p.D > 0 && (int64_t(kN) * p.D) % kMhcSplit == 0 && p.D <= kMhcMaxD, "HC_pre needs n·D % ", kMhcSplit,
                 " == 0 and D <= ", kMhcMaxD, ", D=", p.D);
  DSV4_CHECK(p.sinkhorn_iters >= 1 && p.n_tokens >= 0);
  DSV4_CHECK_MSG(!p.q || (p.norm_weight && p.q_scale && p.D % int(kActBlockSize) == 0),
                 "HC_pre quantises only the normalised u, with scales, D % 128 == 0; D=", p.D);
  DSV4_CHECK_MSG(!p.fake || p.q, "HC_pre fake-quant output needs q");
  if (p.n_tokens == 0) return;
  const int n_splits = int(int64_t(kN) * p.D / kMhcSplit);
  const int64_t tiles = (int64_t(p.n_tokens) + kMixTokens - 1) / kMixTokens;
  DSV4_CHECK_MSG(tiles <= kMaxGridY, "HC_pre n_tokens=", p.n_tokens, " is too many for one launch");
  launch_kernel(mhc_mix_kernel<kHcMix>, dim3(n_splits, unsigned(tiles)), kMixThreads, 0, stream, p.x, p.fn, p.partial,
                p.D, p.n_tokens);
  launch_kernel(mhc_pre_finish_kernel, p.n_tokens, kFinishThreads, 0, stream, p, n_splits);
}

void launch_mhc_head(const MhcHeadParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.x && p.fn && p.base && p.scale && p.partial && p.h);
  DSV4_CHECK_MSG(p.D > 0 && (int64_t(kN) * p.D) % kMhcSplit == 0 && p.D <= kMhcMaxD, "HC_head needs n·D % ", kMhcSplit,
                 " == 0 and D <= ", kMhcMaxD, ", D=", p.D);
  DSV4_CHECK(p.n_tokens >= 0);
  if (p.n_tokens == 0) return;
  const int n_splits = int(int64_t(kN) * p.D / kMhcSplit);
  const int64_t tiles = (int64_t(p.n_tokens) + kMixTokens - 1) / kMixTokens;
  DSV4_CHECK_MSG(tiles <= kMaxGridY, "HC_head n_tokens=", p.n_tokens, " is too many for one launch");
  launch_kernel(mhc_mix_kernel<kN>, dim3(n_splits, unsigned(tiles)), kMixThreads, 0, stream, p.x, p.fn, p.partial, p.D,
                p.n_tokens);
  launch_kernel(mhc_head_finish_kernel, p.n_tokens, kFinishThreads, 0, stream, p, n_splits);
}

void launch_mhc_post(const MhcPostParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.f && p.x && p.post && p.comb && p.out && p.D > 0 && p.n_tokens >= 0 && p.n_tokens <= kMaxGridY);
  if (p.n_tokens == 0) return;
  launch_kernel(mhc_post_kernel, dim3((p.D + kPostThreads - 1) / kPostThreads, p.n_tokens), kPostThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
