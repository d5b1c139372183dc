// The error model of Hopper's FP8 tensor-core sums (wgmma, E4M3 × E4M3 -> FP32), shared by the
// tests of the kernels that leave the tensor core once per 128 columns (cuBLASLt's block-scaled
// FP8 GEMM, tests/cuda/matmul.cpp; the grouped MXFP4 prefill kernel, moe_grouped_gemm.cpp).
#pragma once

#include <algorithm>
#include <cmath>

namespace dsv4::cuda::test {

// The tensor-core part of one output element's error, from its K exact products p (the
// power-of-two block scales move no bits). Hopper's FP8 sums keep 13 fraction bits (the e8m13
// accumulator: Khattak & Mikaitis, "Accurate models of NVIDIA tensor cores", 2025; DeepSeek-V3
// report §3.3.2). Per 128-wide group the sum starts at zero and takes four k32 steps in K order.
// A step aligns its 32 exact products and the running sum C to the largest exponent E among them
// and truncates each to 13 fraction bits: each of the 33 addends loses < 2^(E-13), 2^E <=
// max(|C|, max|p|) < 2^(E+1); normalising the result truncates once more, < 2^-13·(|C| + Σ|p|).
// |C| is bounded by the exact partial sum plus the group's error so far. On data drawn like
// matmul.cpp's (a host simulation, 300 rows per K = 128, 256, 4096, 2026-12-04) the bound came
// to 1.1–10× (median 3.1×) a calibrated 2^-10·Σ|p|, a median 1–1.6 % of |y|.
inline double fp8_group_sum_error(const double* p, int K) {
  constexpr int kGroup = 128, kStep = 32;
  double total = 0;
  for (int k0 = 0; k0 < K; k0 += kGroup) {
    double c = 0, err = 0;  // the group's exact running sum and its error bound so far
    for (int s0 = k0; s0 < std::min(K, k0 + kGroup); s0 += kStep) {
      double step = 0, step_abs = 0, p_max = 0;
      for (int k = s0; k < std::min(K, s0 + kStep); ++k) {
        step += p[k];
        step_abs += std::fabs(p[k]);
        p_max = std::max(p_max, std::fabs(p[k]));
      }
      const double c_abs = std::fabs(c) + err, m = std::max(c_abs, p_max);
      const double ulp = m > 0 ? std::ldexp(1.0, std::ilogb(m) - 13) : 0.0;
      err += (kStep + 1) * ulp + 0x1p-13 * (c_abs + step_abs);
      c += step;
    }
    total += err;
  }
  return total;
}

}  // namespace dsv4::cuda::test
