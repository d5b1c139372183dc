// The indexer's query/key rotation and FP4 grid (§6 step 3, §5.3 step 3, §12): a 128-point
// Walsh–Hadamard transform (Sylvester order) scaled by 1/sqrt(128), then MXFP4 quantisation in
// 1×32 blocks with UE8M0 scales. Indexer scoring and top-k consume the result elsewhere.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

constexpr int kIndexerDim = 128;  // index_head_dim: one warp, 4 values per lane

// y = bf16(H·x / sqrt(128)) (FP32 butterflies, as fast_hadamard_transform); per 32-block of y:
// s = 2^ceil(log2(max(amax, 6·2^-126)/6)), q = e2m1(y/s) (round to nearest even, saturating).
// Any output pointer may be nullptr; packed and scale go together. With row_dst, input row r's
// packed/scale land in row row_dst[r] of those arrays (nothing when row_dst[r] < 0), so newly
// emitted compressor entries scatter into the indexer key cache at their entry number from inside
// a CUDA graph; y and fq stay indexed by r.
struct HadamardFp4Params {
  const __nv_bfloat16* x = nullptr;  // [n_rows, 128] bf16 (indexer q heads or keys, after RoPE unless pos)
  __nv_bfloat16* y = nullptr;        // [n_rows, 128] bf16 rotated, before quantisation
  __nv_bfloat16* fq = nullptr;       // [n_rows, 128] bf16 q·s: the reference's FP4 fake-quant of y
  uint8_t* packed = nullptr;         // [n_rows, 64] E2M1 pairs, low nibble = even element (§11.3)
  uint8_t* scale = nullptr;          // [n_rows, 4] ue8m0 (with row_dst: [n_dst_rows, …] for both)
  const int32_t* row_dst = nullptr;  // [n_rows] destination row of packed/scale, < 0: skip; or nullptr
  int n_rows = 0;
  // With pos: x is before its RoPE, which is applied first (rope.cuh's bytes, forward) to the last
  // rope_dim elements of each row, row r at position pos[r / rows_per_pos] (the indexer's query
  // heads, §6 step 2), so the rotated x is never stored.
  const int32_t* pos = nullptr;
  const float* inv_freq = nullptr;   // [rope_dim / 2]
  int rope_dim = 0, rows_per_pos = 1;
};

void launch_hadamard_fp4(const HadamardFp4Params& p, cudaStream_t stream);

}  // namespace dsv4::cuda
