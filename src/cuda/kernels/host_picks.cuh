// The host tier's hand-back (cuda/host_experts.h): the routed outputs the host computed for the
// picks of its experts, read from mapped host memory into the step's pick-order buffer, where the
// GPU's own experts left +0 at those picks (moe_step.h, MoeScratch::picks).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// For every pick p = t·k + i with t < *n_real and first <= expert_idx[p] < end:
//   picks[p, :] = host[p, :]   (D values; other picks untouched, host's rows there never read).
struct TakeHostPicksParams {
  const __nv_bfloat16* host = nullptr;  // [T, k, D] device pointer of mapped pinned host memory
  const int32_t* expert_idx = nullptr;  // [T, k]
  const int32_t* n_real = nullptr;      // device int32: rows >= it are padding; nullptr: T
  __nv_bfloat16* picks = nullptr;       // [T, k, D]
  int T = 0, k = 0, D = 0;              // D % 8 == 0
  int first = 0, end = 0;               // the host's expert ids
};
void launch_take_host_picks(const TakeHostPicksParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
