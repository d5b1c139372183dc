// Sparse attention with attention sink for the queries of prefill chunks (§4.3, §4.4, §7), over
// BF16 key rows gathered once per chunk (kv_gather.cuh). The decode kernel (sparse_attention.cuh)
// converts every key from the FP8 cache for each query and each group of 16 heads, and spreads a
// query's keys over a cluster of 8 blocks: right for a few queries whose lists must occupy the whole
// GPU, but a prefill chunk has thousands of queries. Here a query is one block and all 64 of its
// heads share each key tile (K = V, MQA-shaped), so a key is loaded once per query and no
// cross-block merge is needed — the shape of FlashMLA's sparse prefill kernel.
//
// Same arithmetic as the decode kernel: BF16 MMAs on exact BF16 keys, FP32 online softmax, P split
// into three BF16 terms, o rounded to BF16 and then rotated back (§4.4). The sums run in another
// order (one pass over the list in 32-key tiles instead of 8 interleaved slices), so the two agree to
// rounding, not bit for bit. The forward gives each row class one kernel (a long prefill chunk's
// rows this one, every other row the decode kernel), so a row's bits do not depend on the rest of
// the step; within this kernel a query's output depends only on its own list and rows.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

struct SparseAttnPrefillParams {
  const __nv_bfloat16* q = nullptr;     // [n_q, H, dim] bf16, after q norm and RoPE
  const __nv_bfloat16* keys = nullptr;  // [rows, dim] bf16 K = V rows (kv_gather.cuh)
  const int32_t* indices = nullptr;     // [n_q, n_idx] rows of `keys`; < 0: masked
  const int32_t* count = nullptr;       // [n_q] or nullptr: entries at or past count[q] are masked (not read)
  const float* sink = nullptr;          // [H] attn_sink logits
  const int32_t* pos = nullptr;         // [n_q] query positions, for the inverse RoPE
  const float* inv_freq = nullptr;      // [32] the layer's rope table (rope.cuh rope_inv_freq)
  __nv_bfloat16* out = nullptr;         // [n_q, H, dim] bf16
  int n_q = 0, H = 0, n_idx = 0;
  int dim = 0;                          // head_dim: kKvDimV4 or kKvDimNano (kv_cache.cuh)
  float softmax_scale = 0.0f;           // 1/sqrt(dim) (§4.3)
};

// o_h = Σ_s p_s·k_s, p_s = exp(ℓ_s − m) / (Σ_s' exp(ℓ_s' − m) + exp(sink_h − m)), as
// sparse_attention.cuh; a query whose list holds no valid row gets o = 0. n_q <= 65535 per launch.
// Deterministic, no workspace, no host sync.
void launch_sparse_attention_prefill(const SparseAttnPrefillParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
