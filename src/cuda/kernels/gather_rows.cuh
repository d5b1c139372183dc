// Row gather on the device: the head projects only the rows whose logits a step needs (the last
// row of each sequence's chunk, or every row when asked), picked by the step plan; an
// expert-parallel rank puts its routed outputs back in pick order.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// dst[i, :] = src[index[i], :] for i < n, rows of `width` BF16 values; a negative index gives a
// row of zeros (+0), which is how an expert-parallel rank leaves the picks it does not compute
// (moe_step.cpp: a dispatch plan's pos_of is −1 there).
struct GatherRowsParams {
  const __nv_bfloat16* src = nullptr;  // [*, width]
  const int32_t* index = nullptr;      // [n] device row indices into src, or < 0 for zeros
  __nv_bfloat16* dst = nullptr;        // [n, width]
  int n = 0;
  int64_t width = 0;                   // a multiple of 8 (16-byte copies)
  // Rows with a negative index are left as they are instead of zeroed: a second pass over the same
  // picks (the host tier's streamed experts, host_experts.h) fills only its own.
  bool keep_negative = false;
};
void launch_gather_rows(const GatherRowsParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
