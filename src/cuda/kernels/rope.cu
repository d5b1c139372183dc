// RoPE kernel, launcher and frequency table; see rope.cuh for the contract.
// One thread per (row, head, pair): reads its two BF16 values, rotates in FP32, writes BF16.
#include "cuda/kernels/rope.cuh"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {

std::vector<float> rope_inv_freq(const RopeParams& table, int rope_dim) {
  DSV4_CHECK(rope_dim > 0 && rope_dim % 2 == 0 && table.theta > 1.0);
  const int half = rope_dim / 2;
  // §4.4 YaRN: corr(β) = dim·ln(L0/(2πβ)) / (2 ln θ); lo = max(floor(corr(β_fast)), 0),
  // hi = min(ceil(corr(β_slow)), dim−1); ramp_i = clamp((i−lo)/(hi−lo), 0, 1).
  double lo = 0, hi = 1;
  if (table.yarn) {
    DSV4_CHECK(table.factor > 0 && table.original_max_position > 0);
    const auto corr = [&](double beta) {
      return rope_dim * std::log(double(table.original_max_position) / (2 * std::numbers::pi * beta)) /
             (2 * std::log(table.theta));
    };
    lo = std::max(std::floor(corr(table.beta_fast)), 0.0);
    hi = std::min(std::ceil(corr(table.beta_slow)), double(rope_dim - 1));
    if (hi == lo) hi += 0.001;  // the reference's guard against a zero-width ramp
  }
  std::vector<float> out(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    double w = std::pow(table.theta, -2.0 * i / rope_dim);
    if (table.yarn) {
      const double ramp = std::clamp((i - lo) / (hi - lo), 0.0, 1.0);
      w = w * (1 - ramp) + (w / table.factor) * ramp;
    }
    out[size_t(i)] = float(w);
  }
  return out;
}

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) rope_kernel(RopeApplyParams p) {
  wait_for_prior_grids();
  const int half = p.rope_dim / 2;
  const int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (t >= int64_t(p.n_rows) * p.n_heads * half) return;
  const int i = int(t % half);
  const int64_t rh = t / half;
  const int h = int(rh % p.n_heads), row = int(rh / p.n_heads);
  __nv_bfloat16* v = p.x + row * p.row_stride + int64_t(h) * p.head_dim + (p.head_dim - p.rope_dim) + 2 * i;
  float x0 = __bfloat162float(v[0]), x1 = __bfloat162float(v[1]);
  rope_pair(x0, x1, float(p.pos[row]) * p.inv_freq[i], p.inverse);  // FP32 angle, as the reference
  v[0] = __float2bfloat16_rn(x0);
  v[1] = __float2bfloat16_rn(x1);
}

}  // namespace

void launch_rope(const RopeApplyParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.x && p.pos && p.inv_freq);
  DSV4_CHECK_MSG(p.rope_dim > 0 && p.rope_dim % 2 == 0 && p.rope_dim <= p.head_dim, "rope_dim=", p.rope_dim,
                 " head_dim=", p.head_dim);
  DSV4_CHECK(p.n_rows >= 0 && p.n_heads >= 1 && p.row_stride >= int64_t(p.n_heads) * p.head_dim);
  const int64_t n = int64_t(p.n_rows) * p.n_heads * (p.rope_dim / 2);
  if (n == 0) return;
  launch_kernel(rope_kernel, unsigned((n + kThreads - 1) / kThreads), kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
