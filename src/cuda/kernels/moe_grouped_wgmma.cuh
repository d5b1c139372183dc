// The grouped MXFP4 expert GEMM on Hopper's FP8 tensor cores (wgmma), for the rows of long prompt
// chunks: the same contract as launch_moe_grouped_gemm (moe_grouped_gemm.cuh), which routes MXFP4
// launches here when MoeGroupedParams::fp8_rows asks for it.
//
// Arithmetic (§11.3 weights, §12 activations):
//   An E2M1 nibble s|e1 e0|m placed as the E4M3 byte s|0 0 e1 e0|m 0 0 is exactly value·2^-6 (the
//   0.5 code becomes the E4M3 subnormal 2^-7), so weights enter the tensor core as E4M3 with no
//   rounding, next to the raw E4M3 activations.
//   One wgmma k32 step = one MXFP4 scale block: it starts from zero (scale-d = 0), and its result
//   p is promoted in FP32: t += p·s_w (per weight row), and per 128 columns total += t·s_x (per
//   token). The 2^6 goes back into the output (exact). Every FP32 step is an explicit
//   __fmul_rn / __fmaf_rn in K order.
//   Hopper's FP8 tensor-core sum keeps 13 fraction bits (the e8m13 accumulator; tests/cuda/
//   matmul.cpp's model): a k32 step aligns its 32 exact products to the largest and truncates
//   each to 13 fraction bits, and truncates its result once more. This is the reference's own
//   path (FP4 weights upcast to FP8 against FP8 activations, architecture.md §11.3), promoted
//   every 32 columns instead of 128.
// BATCH INVARIANCE: a row's output depends only on its own activations and its expert's weights
//   (which item, tile or half a row lands in changes which wgmmas are issued, never what one
//   output element sums). It is not the F16 kernels' result: the sums differ, so a row computed
//   here and the same row in a decode launch differ in the last bits.
//
// Layout (the wgmma operand fragments, PTX ISA "Register Fragments" and "Shared Memory Matrix
// Layout"): a warpgroup owns 64 weight rows (warp w of it: rows 16w + g and 16w + g + 8, lane =
// 4g + q), and its A registers for a k32 step are, per row, the E4M3 bytes of columns 4q..4q+3
// (a0, a1) and 16 + 4q..16 + 4q + 3 (a2, a3): nibbles 4q.. of the block's 16 bytes are bytes
// 2q, 2q+1, i.e. half (q & 1) of word q >> 1, and columns 16 + 4q.. are half (q & 1) of word
// 2 + (q >> 1). The tokens are B: staged K-major, 128 bytes (one K group) per token, in the
// 128-byte swizzle (16-byte chunk c of token t at chunk c ^ (t % 8)), read by descriptor.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernels/moe_grouped_gemm.cuh"

namespace dsv4::cuda {

// The FP8 tensor-core launch for MXFP4 experts (sm_90a).
void launch_moe_grouped_wgmma(const MoeGroupedParams& p, cudaStream_t stream);

namespace moe_wgmma_layout {

// The byte-permute selector that spreads half h (0: nibbles 0..3, 1: nibbles 4..7) of a word of 8
// E2M1 nibbles over the low nibbles of four bytes, given the word and the word shifted right by 4
// as the two permute sources (byte_perm(w, w >> 4, sel)).
__host__ __device__ constexpr uint32_t half_selector(int h) { return h == 0 ? 0x5140u : 0x7362u; }

// Four E2M1 nibbles (half h of word w, selector half_selector(h)) -> four E4M3 bytes, in column
// order, each exactly the nibble's value·2^-6 (see the arithmetic note).
__host__ __device__ inline uint32_t e2m1x4_to_e4m3x4(uint32_t w, uint32_t sel) {
  const uint32_t x = moe_gemm_layout::byte_perm(w, w >> 4, sel);
  return ((x << 2) & 0x1c1c1c1cu) | ((x << 4) & 0x80808080u);
}
constexpr float kE2M1AsE4m3Scale = 64.0f;  // 2^6: E4M3 bias 7 − E2M1 bias 1

// Chunk c (16 bytes) of token t's 128-byte row in the 128-byte swizzle: its byte offset.
__host__ __device__ constexpr int swizzled_chunk(int t, int c) { return t * 128 + ((c ^ (t & 7)) << 4); }

}  // namespace moe_wgmma_layout

}  // namespace dsv4::cuda
