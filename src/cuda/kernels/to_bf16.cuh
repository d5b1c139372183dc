// Conversions to BF16 on the device. FP32 → BF16 rounding of a buffer: a tensor-parallel partial
// sum (attention's wo_b output, layer_pass.cpp) becomes the BF16 activation the reference's linear
// returns, once the ranks have added it in FP32. FP8 128×128-block weight rows → BF16, exactly:
// the reference's BF16 weight of a BF16 einsum (wo_a, §4.5) for a BF16 GEMM (matmul.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace dsv4::cuda {

// dst[i] = bf16(src[i]) (round to nearest even) for i < n.
struct ToBf16Params {
  const float* src = nullptr;
  __nv_bfloat16* dst = nullptr;
  size_t n = 0;
};
void launch_to_bf16(const ToBf16Params& p, cudaStream_t stream);

// dst[r][k] = e4m3(w[row0 + r][k]) · 2^(scale[(row0 + r) / 128][k / 128] − 127) for r < rows,
// k < K: exact in BF16 (4 significant bits, a power-of-two scale in BF16's exponent range).
struct Fp8RowsToBf16Params {
  const uint8_t* w = nullptr;      // [N, K] e4m3
  const uint8_t* scale = nullptr;  // [ceil(N/128), K/128] ue8m0
  int row0 = 0, rows = 0, K = 0;   // K % 128 == 0
  __nv_bfloat16* dst = nullptr;    // [rows, K]
};
void launch_fp8_rows_to_bf16(const Fp8RowsToBf16Params& p, cudaStream_t stream);

}  // namespace dsv4::cuda
