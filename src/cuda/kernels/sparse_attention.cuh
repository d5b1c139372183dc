// Sparse attention with attention sink over a gathered key list (§4.3, §7): every query attends
// to the cache rows its index list names (window ring slots and selected/compressed entries
// alike), K = V = the dequantised d-dim row (d = head_dim, 512 or 128), then the last 64 output
// dims are rotated back by the query position (§4.4 inverse RoPE). The cache format is
// kv_cache.cuh's; the index lists are attention_indices.cuh's (or the caller's). Two kernels: the
// decode kernel reads the FP8 cache (for a few queries at a time); given BF16 key rows gathered
// for a prefill chunk (kv_gather.cuh), the prefill kernel (sparse_attention_prefill.cuh) reads
// those. They agree to rounding; which rows take which is the caller's (attention_step.cpp: by
// row class, so a row's bits do not depend on the rest of the step).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// o_h = Σ_s p_s·k_s, p_s = exp(ℓ_s − m) / (Σ_s' exp(ℓ_s' − m) + exp(sink_h − m)),
// ℓ_s = softmax_scale · q_h·k_s, FP32 online softmax; o rounded to BF16, then inverse RoPE
// (FP32, rounded to BF16 again, as the reference applies it to the BF16 output).
// A query whose list holds no valid index gets o = 0. n_q <= 65535 per launch (grid y).
// Deterministic: a query's output depends only on its own list and rows (not on n_q or on timing);
// no workspace, no host sync, capturable in a CUDA graph. Hopper thread-block clusters (sm_90).
struct SparseAttnParams {
  const __nv_bfloat16* q = nullptr;  // [n_q, H, dim] bf16, after q norm and RoPE
  const uint8_t* cache = nullptr;    // [n_pages, kv_page_bytes(block_size, dim)] (kv_cache.cuh)
  // Or [rows, dim] BF16 K = V rows (kv_gather.cuh): then `indices` name these rows, the prefill
  // kernel runs, and cache and block_size are unused.
  const __nv_bfloat16* keys = nullptr;
  const int32_t* indices = nullptr;  // [n_q, n_idx] cache slots (or rows of keys); < 0: masked
  // [n_q] or nullptr: every entry of query q's list at or past count[q] is masked, so the kernel
  // reads only the first min(count[q], n_idx) (attention_indices.cuh writes it). A list sized for
  // the longest context the cache allows (HCA: window + max_context/128) is mostly −1 at the
  // context a step runs at, and every block of a query would otherwise scan all of it.
  const int32_t* count = nullptr;
  const float* sink = nullptr;       // [H] attn_sink logits
  const int32_t* pos = nullptr;      // [n_q] query positions, for the inverse RoPE
  const float* inv_freq = nullptr;   // [32] the layer's rope table (rope.cuh rope_inv_freq)
  __nv_bfloat16* out = nullptr;      // [n_q, H, dim] bf16
  int n_q = 0, H = 0, n_idx = 0, block_size = 0;
  int dim = 0;                       // head_dim: kKvDimV4 or kKvDimNano (kv_cache.cuh)
  float softmax_scale = 0.0f;        // 1/sqrt(dim) (§4.3)
};

void launch_sparse_attention(const SparseAttnParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
