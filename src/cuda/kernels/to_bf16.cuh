// FP32 → BF16 rounding of a buffer on the device: a tensor-parallel partial sum (attention's wo_b
// output, layer_pass.cpp) becomes the BF16 activation the reference's linear returns, once the ranks
// have added it in FP32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>

namespace dsv4::cuda {

// dst[i] = bf16(src[i]) (round to nearest even) for i < n.
struct ToBf16Params {
  const float* src = nullptr;
  __nv_bfloat16* dst = nullptr;
  size_t n = 0;
};
void launch_to_bf16(const ToBf16Params& p, cudaStream_t stream);

}  // namespace dsv4::cuda
