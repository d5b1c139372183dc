// Conversions to BF16 (to_bf16.cuh): grid-stride passes, one value (FP32) or four (FP8 weights) per
// thread and step.
#include "cuda/kernels/to_bf16.cuh"

#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/launch.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kThreads = 256;
constexpr size_t kMaxBlocks = 132 * 8;  // fills an H200 (132 SMs); larger buffers stride

__global__ void to_bf16_kernel(ToBf16Params p) {
  wait_for_prior_grids();
  for (size_t i = size_t(blockIdx.x) * kThreads + threadIdx.x; i < p.n; i += size_t(gridDim.x) * kThreads)
    p.dst[i] = __float2bfloat16_rn(p.src[i]);
}

__global__ void fp8_rows_to_bf16_kernel(Fp8RowsToBf16Params p) {
  wait_for_prior_grids();
  const int n_kb = p.K / int(kFP8BlockSize);
  const size_t n4 = size_t(p.rows) * p.K / 4;
  for (size_t i = size_t(blockIdx.x) * kThreads + threadIdx.x; i < n4; i += size_t(gridDim.x) * kThreads) {
    const int r = int(i * 4 / size_t(p.K)), k = int(i * 4 % size_t(p.K)), row = p.row0 + r;
    const uint32_t w = *reinterpret_cast<const uint32_t*>(p.w + int64_t(row) * p.K + k);
    const float sc = e8m0_to_float(p.scale[int64_t(row / int(kFP8BlockSize)) * n_kb + k / int(kFP8BlockSize)]);
    const float2 a = e4m3x2_to_float2(uint16_t(w)), b = e4m3x2_to_float2(uint16_t(w >> 16));
    *reinterpret_cast<uint2*>(p.dst + int64_t(r) * p.K + k) =
        make_uint2(bf16x2_bits(a.x * sc, a.y * sc), bf16x2_bits(b.x * sc, b.y * sc));
  }
}

}  // namespace

void launch_fp8_rows_to_bf16(const Fp8RowsToBf16Params& p, cudaStream_t stream) {
  DSV4_CHECK(p.rows == 0 || (p.w && p.scale && p.dst));
  DSV4_CHECK_MSG(p.row0 >= 0 && p.rows >= 0 && p.K > 0 && p.K % int(kFP8BlockSize) == 0, "fp8_rows_to_bf16: row0=",
                 p.row0, " rows=", p.rows, " K=", p.K);
  if (p.rows == 0) return;
  const size_t blocks = std::min(kMaxBlocks, (size_t(p.rows) * p.K / 4 + kThreads - 1) / kThreads);
  launch_kernel(fp8_rows_to_bf16_kernel, unsigned(blocks), kThreads, 0, stream, p);
}

void launch_to_bf16(const ToBf16Params& p, cudaStream_t stream) {
  DSV4_CHECK(p.n == 0 || (p.src && p.dst));
  if (p.n == 0) return;
  const size_t blocks = std::min(kMaxBlocks, (p.n + kThreads - 1) / kThreads);
  launch_kernel(to_bf16_kernel, unsigned(blocks), kThreads, 0, stream, p);
}

}  // namespace dsv4::cuda
