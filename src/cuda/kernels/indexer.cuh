// Lightning-indexer scoring and top-k selection (§6 steps 5–6, §7): per query, FP32 scores of
// every visible FP4 indexer key, then the K best entry numbers. Queries/keys come rotated and
// FP4-quantised from hadamard_fp4.cuh; the selected entries feed sparse_attention.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernels/step_rows.cuh"

namespace dsv4::cuda {

constexpr int kIndexerMaxHeads = 64;  // index_n_heads (Flash/Pro 64); bounds the query's smem tile
constexpr int kIndexerKeysPerBlock = 64;  // CSA entries per 256-position KV block (§13, kv_blocks.h)

// S[q][j] = Σ_h ReLU(q_h · k_j) · w[q][h] · di^−½ · Hi^−½ over the visible keys j < (pos[q]+1)/ratio
// (§6, §7), keys dequantised from FP4 (E2M1 · UE8M0 per 32); keep the min(K, visible) largest,
// ties to the lower index, written in increasing entry order, the rest −1.
// Visible is clamped to [0, max_entries] (pos < 0 sees nothing). Key j of query q's sequence is
// row paged_entry_row(pages, slot[q], j, kIndexerKeysPerBlock) of the key pool (step_rows.cuh).
// Dots and sums are FP32; ±0 rank equal; scores are assumed finite (NaN inputs give an
// unspecified but in-bounds selection).
// score[q][j] holds S for j < visible afterwards; the rest of the scratch is left untouched.
// Alignment: key_packed 16 bytes, key_scale 4, q 4 (cudaMalloc'd bases satisfy all three).
struct IndexerTopkParams {
  const __nv_bfloat16* q = nullptr;      // [n_q, Hi, 128] bf16 rotated, FP4-fake-quantised queries (hadamard_fp4 fq)
  const float* head_weight = nullptr;    // [n_q, Hi] fp32 x·weights_projᵀ (unscaled)
  const uint8_t* key_packed = nullptr;   // [pool rows, 64] E2M1 pairs (hadamard_fp4 packed layout)
  const uint8_t* key_scale = nullptr;    // [pool rows, 4] ue8m0
  const int32_t* pos = nullptr;          // [n_q] query positions
  const int32_t* slot = nullptr;         // [n_q] the query's sequence slot (its page-table row)
  PageTable pages;                       // slot -> key blocks
  float* score = nullptr;                // [n_q, max_entries] fp32 scratch
  int32_t* topk = nullptr;               // [n_q, K] out
  int n_q = 0, Hi = 0, K = 0, ratio = 0, max_entries = 0;
  // Score on the tensor cores (BF16 MMAs: the FP4 keys and FP4-rounded queries are exact in BF16,
  // the dots accumulate in FP32 in another order than the scalar kernel's): for the queries of a
  // long prompt chunk, which score every earlier entry, so the work grows with the square of the
  // prompt. Every query of such a launch belongs to one sequence (a device trap otherwise).
  bool prefill = false;
};

// Two kernels on `stream` (scores, then selection); no allocation, no host sync, graph-capturable.
void launch_indexer_topk(const IndexerTopkParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
