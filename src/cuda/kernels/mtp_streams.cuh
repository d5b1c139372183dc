// The MTP block's stream plumbing on the device (§10): the main model's final streams a sequence
// slot keeps for later MTP rows, the gather of an MTP pass's input streams, and the embedding term
// every stream gets. The block itself is layer_pass.cpp's; which rows go where is the step plan's.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// kept[keep_row[r], :] = X[r, :] for the rows r < T with keep_row[r] >= 0 (rows of `width` BF16).
struct KeepStreamsParams {
  const __nv_bfloat16* X = nullptr;  // [T, width] the pass's final streams
  const int32_t* keep_row = nullptr; // [T] device, −1: not kept
  __nv_bfloat16* kept = nullptr;     // [*, width]
  int T = 0;
  int64_t width = 0;                 // a multiple of 8 (16-byte copies)
};
void launch_keep_streams(const KeepStreamsParams& p, cudaStream_t stream);

// dst[r, :] = source[r] >= 0 ? X[source[r], :] : kept[−1 − source[r], :] for r < T: an MTP row's
// input streams are a row of the pass just run, or streams a slot kept from an earlier pass.
struct MtpInputParams {
  const __nv_bfloat16* X = nullptr;     // [*, width]
  const __nv_bfloat16* kept = nullptr;  // [*, width]
  const int32_t* source = nullptr;      // [T] device
  __nv_bfloat16* dst = nullptr;         // [T, width]; must not overlap X or kept
  int T = 0;
  int64_t width = 0;                    // a multiple of 8
};
void launch_mtp_input(const MtpInputParams& p, cudaStream_t stream);

// §10 step 3: X[t, j, :] = bf16(X[t, j, :] + e[t, :]) for every stream j < n (the e_proj term is
// broadcast to all streams; the sum in FP32, rounded once, as the reference's BF16 add).
struct AddToStreamsParams {
  __nv_bfloat16* X = nullptr;        // [T, n, D] in place
  const __nv_bfloat16* e = nullptr;  // [T, D]
  int T = 0, n = 0, D = 0;           // D a multiple of 8
};
void launch_add_to_streams(const AddToStreamsParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
