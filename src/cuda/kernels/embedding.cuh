// Token embedding into the n hyper-connection streams (§2: every stream starts as the token's
// embedding row). The streams' later mixing is mhc.cuh's; the table itself is loaded by model/.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// streams[t, s, :] = table[tokens[t], :] for every stream s (BF16, no scaling, §2). An id outside
// [0, vocab) writes a NaN row (ids live in device memory, so the launcher cannot reject them; the
// NaN makes the bad id visible downstream instead of reading out of bounds).
struct EmbeddingParams {
  const __nv_bfloat16* table = nullptr;  // [vocab, D] bf16
  const int32_t* tokens = nullptr;       // [T] token ids (device)
  __nv_bfloat16* streams = nullptr;      // [T, n, D] out
  int T = 0, n = 0, D = 0, vocab = 0;
};

// T >= 0, n >= 1, D >= 1, vocab >= 1.
void launch_embedding(const EmbeddingParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
