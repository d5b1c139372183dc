// RMSNorm over the rows of a BF16 matrix, optionally fused with the FP8 1×128 activation
// quantisation that feeds the next FP8/FP4 GEMV (§12). The GEMVs themselves are gemv_*.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// y = bf16(x / sqrt(mean(x²) + eps) · w) per row, FP32 math (architecture.md header: "All norms
// compute in FP32"). With q set, also q/q_scale = the FP8 1×128 quantisation of the BF16 y (and,
// with fake, its BF16 fake-quant values q·s): one launch instead of rmsnorm + act_quant. A row's
// arithmetic depends on dim only, never on n_rows.
struct RmsNormParams {
  const __nv_bfloat16* x = nullptr;       // [n_rows, dim] bf16
  const __nv_bfloat16* weight = nullptr;  // [dim] bf16, or nullptr: unweighted (§4.1 per-head q norm)
  __nv_bfloat16* y = nullptr;             // [n_rows, dim] bf16; may alias x
  uint8_t* q = nullptr;                   // [n_rows, dim] e4m3, or nullptr (no quantisation)
  uint8_t* q_scale = nullptr;             // [n_rows, dim/128] ue8m0, with q
  __nv_bfloat16* fake = nullptr;          // [n_rows, dim] bf16 q·s (act_quant.cuh's fake), or nullptr; needs q
  int n_rows = 0, dim = 0;
  float eps = 1e-6f;                      // rms_norm_eps
  // With pos: RoPE (rope.cuh, forward) on the last rope_dim elements of each row of the BF16 y,
  // row r at position pos[r / rows_per_pos] (rows_per_pos heads per token): the bytes of
  // launch_rope on y, in the same launch where the row fits one warp (no q, dim ≤ 2048: the
  // per-head q and kv norms of §4.1/§4.2), else in a second launch.
  const int32_t* pos = nullptr;           // [n_rows / rows_per_pos]
  const float* inv_freq = nullptr;        // [rope_dim / 2] from rope_inv_freq
  int rope_dim = 0, rows_per_pos = 1;
};

// dim >= 1 (any size); with q, dim % 128 == 0; with pos, rope_dim even, ≤ dim, n_rows a multiple of
// rows_per_pos.
void launch_rmsnorm(const RmsNormParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
