// Sampling kernel and launcher; see sampling.cuh for the contract.
// One block per row, no sort. The survivors of top-k and of top-p are each a prefix of the "more
// likely" order (logit descending, id ascending), so a cut is found in two steps: an MSB-first
// radix select over a monotone 32-bit key of the logit finds the key at the cut (counting tokens
// for top-k, summing probability weights for top-p), then a scan in id order finds how many of the
// tokens tied at that key survive (lowest ids first). The draw is a scan in id order over the
// survivors' weights. Weights are integers (p/p_max in units of 2^-44), so every sum is exact and
// no result depends on the order in which atomics land.
#include "cuda/kernels/sampling.cuh"

#include <curand_kernel.h>

#include <climits>
#include <cmath>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kRadixBits = 8;
constexpr int kRadixBins = 1 << kRadixBits;
constexpr int kBinsPerLane = kRadixBins / kWarpSize;
static_assert(kRadixBins <= kThreads && kRadixBins % kWarpSize == 0);
// weight = round(exp((l − max)/T) · 2^44) <= 2^44, so a row's sum stays below 2^61 for any
// vocab < 2^17 (V4: 129,280), and the draw's 128-bit fraction keeps its bias below 2^-67.
constexpr int kWeightBits = 44;
constexpr int kMaxVocab = 1 << (63 - kWeightBits - 2);

// Monotone map float -> uint32 (a < b ⇔ key(a) < key(b) for non-NaN floats). −0 is folded onto
// +0 so that equal logits have equal keys, as in the CPU sampler's comparisons. Every non-NaN key
// is > 0 (−inf maps to 0x007fffff).
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t b = __float_as_uint(f == 0.0f ? 0.0f : f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// A prefix of the "more likely" order: every key above `key`, and ids <= last_id among the
// tokens at `key`. The default keeps every token.
struct Cut {
  uint32_t key = 0;
  int last_id = INT_MAX;
  __device__ bool keeps(uint32_t k, int i) const { return k > key || (k == key && i <= last_id); }
};

struct Row {
  const float* logits;  // [vocab] fp32
  int vocab;
  float max_logit, temperature;
  // Integer probability weight, relative to the most likely token (whose weight is exactly 2^44).
  __device__ uint64_t weight(float l) const {
    return __float2ull_rn(ldexpf(expf((l - max_logit) / temperature), kWeightBits));
  }
};

struct Shared {
  unsigned long long hist[kWarps][kRadixBins];  // per-warp histograms: atomics contend within a warp only
  unsigned long long bins[kRadixBins];
  uint64_t warp_u64[kWarps];
  uint32_t warp_key[kWarps];
  int warp_id[kWarps];
  uint64_t u64_result;
  int int_result;
};

__device__ __forceinline__ uint64_t block_sum_u64(uint64_t v, Shared& sh) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  if (threadIdx.x % kWarpSize == 0) sh.warp_u64[threadIdx.x / kWarpSize] = v;
  __syncthreads();
  uint64_t total = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) total += sh.warp_u64[w];
  __syncthreads();  // warp_u64 is reused by the next reduction
  return total;
}

// Σ of v over the threads before this one (threadIdx order).
__device__ __forceinline__ uint64_t block_exclusive_scan_u64(uint64_t v, Shared& sh) {
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  uint64_t incl = v;
#pragma unroll
  for (int o = 1; o < kWarpSize; o *= 2) {
    const uint64_t n = __shfl_up_sync(kFullMask, incl, o);
    if (lane >= o) incl += n;
  }
  if (lane == kWarpSize - 1) sh.warp_u64[warp] = incl;
  __syncthreads();
  uint64_t before = 0;
  for (int w = 0; w < warp; ++w) before += sh.warp_u64[w];
  __syncthreads();
  return before + incl - v;
}

// The key at which the cumulative weight, most likely first, first reaches `target`
// (1 <= target <= Σ weight): returns it and the weight of the keys strictly above it.
// weight_of(logit, key, id) is the token's weight, 0 for a token that is not a candidate.
template <typename WeightOf>
__device__ void radix_select(const Row& r, uint64_t target, WeightOf weight_of, Shared& sh, uint32_t& key_out,
                             uint64_t& above_out) {
  const int warp = threadIdx.x / kWarpSize;
  uint32_t prefix = 0, mask = 0;
  uint64_t above = 0;
  for (int shift = 32 - kRadixBits; shift >= 0; shift -= kRadixBits) {
    for (int b = threadIdx.x; b < kWarps * kRadixBins; b += kThreads) (&sh.hist[0][0])[b] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < r.vocab; i += kThreads) {
      const float l = r.logits[i];
      const uint32_t k = order_key(l);
      if ((k & mask) != prefix) continue;
      const uint64_t w = weight_of(l, k, i);
      if (w) atomicAdd(&sh.hist[warp][(k >> shift) & (kRadixBins - 1)], static_cast<unsigned long long>(w));
    }
    __syncthreads();
    if (threadIdx.x < kRadixBins) {
      unsigned long long s = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) s += sh.hist[w][threadIdx.x];
      sh.bins[threadIdx.x] = s;
    }
    __syncthreads();
    if (threadIdx.x < kWarpSize) {
      // Lane l owns the digits 255 − 8l down to 248 − 8l: the most likely first.
      const int lane = threadIdx.x;
      uint64_t h[kBinsPerLane], s = 0;
#pragma unroll
      for (int j = 0; j < kBinsPerLane; ++j) s += h[j] = sh.bins[kRadixBins - 1 - (lane * kBinsPerLane + j)];
      uint64_t incl = s;
#pragma unroll
      for (int o = 1; o < kWarpSize; o *= 2) {
        const uint64_t n = __shfl_up_sync(kFullMask, incl, o);
        if (lane >= o) incl += n;
      }
      uint64_t acc = above + incl - s;
      if (acc < target && target <= acc + s) {  // exactly one lane: the intervals partition the mass
        int found = -1;
#pragma unroll
        for (int j = 0; j < kBinsPerLane; ++j)
          if (found < 0) {
            if (acc + h[j] >= target)
              found = j;
            else
              acc += h[j];
          }
        sh.int_result = kRadixBins - 1 - (lane * kBinsPerLane + found);
        sh.u64_result = acc;
      }
    }
    __syncthreads();
    prefix |= uint32_t(sh.int_result) << shift;
    mask |= uint32_t(kRadixBins - 1) << shift;
    above = sh.u64_result;
    __syncthreads();  // int_result / u64_result are rewritten by the next pass
  }
  key_out = prefix;
  above_out = above;
}

// The smallest id j with Σ_{i<=j} f(i) >= target, ids scanned in order, each thread owning a
// contiguous run. kSampleInvalidToken if target is outside [1, Σ f] (the callers rule that out).
template <typename F>
__device__ int id_select(const Row& r, uint64_t target, F f, Shared& sh) {
  const int run = (r.vocab + kThreads - 1) / kThreads;
  const int lo = min(r.vocab, int(threadIdx.x) * run), hi = min(r.vocab, lo + run);
  uint64_t s = 0;
  for (int i = lo; i < hi; ++i) s += f(i);
  if (threadIdx.x == 0) sh.int_result = kSampleInvalidToken;
  const uint64_t before = block_exclusive_scan_u64(s, sh);
  if (before < target && target <= before + s) {
    uint64_t acc = before;
    for (int i = lo; i < hi; ++i) {
      acc += f(i);
      if (acc >= target) {
        sh.int_result = i;
        break;
      }
    }
  }
  __syncthreads();
  const int id = sh.int_result;
  __syncthreads();
  return id;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(SampleParams p) {
  wait_for_prior_grids();
  __shared__ Shared sh;
  const int row = blockIdx.x;
  const float* logits = p.logits + int64_t(row) * p.vocab;
  // Per-row mode: this row's parameters, Philox counter (0, its step); scalar mode: counter (row,
  // *step) — advance_step, the next kernel in the stream, adds 1 afterwards.
  if (p.per_row) {
    const RowSampling rs = p.per_row[row];
    p.temperature = rs.temperature;
    p.top_k = rs.top_k;
    p.top_p = rs.top_p;
    p.seed = rs.seed;
  }
  const uint64_t step = p.per_row ? p.per_row[row].step : *p.step;
  const uint64_t philox_row = p.per_row ? 0 : uint64_t(row);
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;

  // Pass 1: rows with NaN / +inf, and the argmax (largest key, then lowest id).
  uint32_t best_key = 0;
  int best_id = INT_MAX;
  bool bad = false;
  for (int i = threadIdx.x; i < p.vocab; i += kThreads) {
    const float l = logits[i];
    bad |= isnan(l) || l == INFINITY;
    const uint32_t k = order_key(l);
    if (k > best_key) {  // ids rise along this loop: the first of equal keys stays
      best_key = k;
      best_id = i;
    }
  }
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o /= 2) {
    const uint32_t ok = __shfl_xor_sync(kFullMask, best_key, o);
    const int oi = __shfl_xor_sync(kFullMask, best_id, o);
    if (ok > best_key || (ok == best_key && oi < best_id)) {
      best_key = ok;
      best_id = oi;
    }
  }
  if (lane == 0) {
    sh.warp_key[warp] = best_key;
    sh.warp_id[warp] = best_id;
  }
  bad = __syncthreads_or(bad);
  for (int w = 0; w < kWarps; ++w)
    if (sh.warp_key[w] > best_key || (sh.warp_key[w] == best_key && sh.warp_id[w] < best_id)) {
      best_key = sh.warp_key[w];
      best_id = sh.warp_id[w];
    }
  if (bad || best_key == order_key(-INFINITY)) {
    if (threadIdx.x == 0) p.token[row] = kSampleInvalidToken;
    return;
  }
  if (p.temperature == 0.0f) {
    if (threadIdx.x == 0) p.token[row] = best_id;
    return;
  }
  const Row r{logits, p.vocab, key_value(best_key), p.temperature};

  // Top-k: the k-th most likely token's key, then the lowest ids among the tokens tied there.
  Cut cut_k;
  if (p.top_k > 0 && p.top_k < p.vocab) {
    uint32_t key;
    uint64_t above;
    radix_select(r, uint64_t(p.top_k), [](float, uint32_t, int) -> uint64_t { return 1; }, sh, key, above);
    cut_k.key = key;
    cut_k.last_id = id_select(
        r, uint64_t(p.top_k) - above, [&](int i) -> uint64_t { return order_key(logits[i]) == key; }, sh);
  }
  auto weight_k = [&](int i) -> uint64_t {
    const float l = logits[i];
    return cut_k.keeps(order_key(l), i) ? r.weight(l) : 0;
  };
  uint64_t mass_k = 0;
  for (int i = threadIdx.x; i < p.vocab; i += kThreads) mass_k += weight_k(i);
  mass_k = block_sum_u64(mass_k, sh);  // >= 2^44: the most likely token survives every cut

  // Top-p over what top-k left: the shortest prefix with Σ weight >= top_p · mass_k (the CPU's
  // "mass < top_p: take one more", in integers).
  Cut cut_p;
  if (p.top_p < 1.0f) {
    const double want = std::ceil(double(p.top_p) * double(mass_k));
    const uint64_t target = want < 1.0 ? 1 : (want >= double(mass_k) ? mass_k : uint64_t(want));
    uint32_t key;
    uint64_t above;
    radix_select(
        r, target, [&](float l, uint32_t k, int i) -> uint64_t { return cut_k.keeps(k, i) ? r.weight(l) : 0; }, sh,
        key, above);
    // Every token at `key` has the same weight, > 0 because the cut's bin holds mass.
    const uint64_t tie_weight = r.weight(key_value(key));
    const uint64_t need = (target - above + tie_weight - 1) / tie_weight;
    cut_p.key = key;
    cut_p.last_id = id_select(
        r, need,
        [&](int i) -> uint64_t { return order_key(logits[i]) == key && cut_k.keeps(key, i); }, sh);
  }
  auto weight_kp = [&](int i) -> uint64_t {
    const float l = logits[i];
    const uint32_t k = order_key(l);
    return cut_k.keeps(k, i) && cut_p.keeps(k, i) ? r.weight(l) : 0;
  };
  uint64_t mass = 0;
  for (int i = threadIdx.x; i < p.vocab; i += kThreads) mass += weight_kp(i);
  mass = block_sum_u64(mass, sh);

  // The draw: a 128-bit uniform fraction u from Philox (counter = (row, step)), target
  // floor(u · mass) + 1 in [1, mass], the token whose id-order cumulative weight first reaches it.
  if (threadIdx.x == 0) {
    curandStatePhilox4_32_10_t rng;
    curand_init(p.seed, philox_row, step * 4, &rng);  // 4 values = one Philox block per step
    const uint4 u = curand4(&rng);
    const uint64_t a = uint64_t(u.x) << 32 | u.y, b = uint64_t(u.z) << 32 | u.w;
    // floor((a·2^64 + b) · mass / 2^128) = hi(a·mass) + carry(lo(a·mass) + hi(b·mass)).
    const uint64_t a_lo = a * mass, sum = a_lo + __umul64hi(b, mass);
    sh.u64_result = __umul64hi(a, mass) + (sum < a_lo ? 1 : 0) + 1;
  }
  __syncthreads();
  const uint64_t target = sh.u64_result;
  __syncthreads();
  const int token = id_select(r, target, weight_kp, sh);
  if (threadIdx.x == 0) p.token[row] = token;
}

__global__ void advance_step_kernel(uint64_t* step) {
  wait_for_prior_grids();
  ++*step;
}

}  // namespace

void launch_sample(const SampleParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.logits && p.token && (p.step || p.per_row) && p.rows >= 0 && p.vocab >= 1 && p.top_k >= 0);
  DSV4_CHECK_MSG(p.vocab <= kMaxVocab, "sampling: vocab ", p.vocab, " above ", kMaxVocab);
  DSV4_CHECK_MSG(std::isfinite(p.temperature) && p.temperature >= 0.0f, "sampling: temperature ", p.temperature);
  DSV4_CHECK_MSG(p.top_p > 0.0f && p.top_p <= 1.0f, "sampling: top_p ", p.top_p);
  if (p.rows > 0) {
    launch_kernel(sample_kernel, p.rows, kThreads, 0, stream, p);
  }
  if (p.per_row) return;
  launch_kernel(advance_step_kernel, 1, 1, 0, stream, p.step);
}

}  // namespace dsv4::cuda
