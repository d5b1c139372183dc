// The grouped MXFP4 expert GEMM on Hopper's FP8 tensor cores (wgmma), for the rows of long prompt
// chunks (and, with CudaOptions::fp8_expert_decode, every row): the same contract as
// launch_moe_grouped_gemm (moe_grouped_gemm.cuh), which routes MXFP4 launches here when
// MoeGroupedParams::fp8_rows asks for it. Two item shapes (moe_grouped_wgmma.cu): 128 tokens for
// launches with many rows per expert, 8 for few.
//
// Arithmetic (§11.3 weights, §12 activations):
//   The per-32 weight scales are folded into the weights as the official converter re-encodes
//   MXFP4 experts as FP8 (architecture.md §11.3), per row of a 128-column group rather than per
//   128×128 tile: with t the row's largest scale byte in the group and d = t − s the depth of a
//   block's scale s below it, the block's
//   nibbles enter the tensor core as the E4M3 bytes of e2m1·2^(6 − d) (6·2^6 = 384 ≤ 448). Those
//   are exact for d ≤ 14 (down to the E4M3 subnormal 2^-9); deeper blocks are rounded to nearest
//   even there (the converter's "tiny sub-blocks can lose low bits"), all to ±0 from d = 19 on.
//   A group is then four chained wgmma k32 steps (the first from zero), promoted once in FP32:
//   total += D·(2^(t−127)·s_x), the product of two powers of two being exact; the 2^-6 goes back
//   into the output (exact). Every FP32 step is an explicit __fmul_rn / __fmaf_rn in K order.
//   Hopper's FP8 tensor-core sum keeps 13 fraction bits (the e8m13 accumulator; tests/cuda/
//   fp8_accumulator_model.h): a k32 step aligns its 32 exact products and the running sum to the
//   largest and truncates each to 13 fraction bits, and truncates its result once more. This is
//   the reference's own path (FP4 weights upcast to FP8 against FP8 activations, §11.3) and
//   DeepGEMM's promotion interval (128 columns).
//   Promoting every k32 block instead, with a wait on each block's wgmma, ran at 13 % of the FP8
//   peak on an H200 (bench/results/2026-12-05-h200-fp8-expert-prefill.md).
// BATCH INVARIANCE: a row's output depends only on its own activations and its expert's weights
//   (which item shape, item, tile or half a row lands in changes which wgmmas are issued, never
//   what one output element sums — if a token column's tensor-core sum does not depend on the
//   wgmma's width, n8 or n64, which tests/cuda/batched_runtime.cpp checks). It is not the F16
//   kernels' result: the sums differ, so a row computed here and the same row in an F16 launch
//   differ in the last bits.
//
// Layout (the wgmma operand fragments, PTX ISA "Register Fragments" and "Shared Memory Matrix
// Layout"): a warpgroup owns 64 weight rows (warp w of it: rows 16w + g and 16w + g + 8, lane =
// 4g + q), and its A registers for a k32 step are, per row, the E4M3 bytes of columns 4q..4q+3
// (a0, a1) and 16 + 4q..16 + 4q + 3 (a2, a3): nibbles 4q.. of the block's 16 bytes are bytes
// 2q, 2q+1, i.e. half (q & 1) of word q >> 1, and columns 16 + 4q.. are half (q & 1) of word
// 2 + (q >> 1). A byte comes from an 8-entry table per depth (magnitude code -> E4M3 byte), one
// byte-permute for four nibbles, and the nibble's sign bit. The tokens are B: staged K-major, 128
// bytes (one K group) per token, in the 128-byte swizzle (swizzle128.cuh), read by descriptor.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernels/moe_grouped_gemm.cuh"
#include "cuda/kernels/swizzle128.cuh"

namespace dsv4::cuda {

// The FP8 tensor-core launch for MXFP4 experts (sm_90a).
void launch_moe_grouped_wgmma(const MoeGroupedParams& p, cudaStream_t stream);

namespace moe_wgmma_layout {

constexpr int kFoldTop = 6;                    // a group's top block enters as e2m1·2^6
constexpr int kFoldDepths = 20;                // tables for depths 0..19; from 19 on every code is ±0
constexpr float kFoldedOutputScale = 0x1p-6f;  // undoes kFoldTop

// The byte-permute selector that gathers, for half h (0: nibbles 0..3, 1: nibbles 4..7) of a
// word of 8 E2M1 nibbles, the byte holding each nibble's sign bit at bit 7, given the word shifted
// left by 4 and the word as the two permute sources (byte_perm(w << 4, w, sel)): bit 7 of byte k
// of w << 4 is nibble 2k's sign, bit 7 of byte k of w is nibble 2k + 1's.
__host__ __device__ constexpr uint32_t half_selector(int h) { return h == 0 ? 0x5140u : 0x7362u; }

// Four E2M1 nibbles (half h of word w) -> four E4M3 bytes, in column order: byte i is entry
// (magnitude of nibble i) of the depth's table (bytes 0..3 in lo, 4..7 in hi) with the nibble's
// sign bit. Six instructions per four bytes: the shifted word, two permutes, the mask of the
// magnitudes' selector and one three-input logic op to merge (the signs taken from w << 4 and w
// land at bit 7 already; taken from w and w >> 4 they needed one more shift).
__host__ __device__ inline uint32_t e2m1x4_to_e4m3x4(uint32_t w, int h, uint32_t table_lo, uint32_t table_hi) {
  const uint32_t magnitudes = moe_gemm_layout::byte_perm(table_lo, table_hi, (w >> (16 * h)) & 0x7777u);
  const uint32_t signs = moe_gemm_layout::byte_perm(w << 4, w, half_selector(h));
  return magnitudes | (signs & 0x80808080u);
}

// A row's four scale bytes of one 128-column group (byte b = block b): returns their depths
// below the largest, clamped to kFoldDepths − 1, one per byte; top receives the largest.
__host__ __device__ inline uint32_t fold_depths(uint32_t scales, uint32_t& top) {
  uint32_t t = 0;
  for (int b = 0; b < 4; ++b) t = (scales >> (8 * b) & 0xffu) > t ? (scales >> (8 * b) & 0xffu) : t;
  uint32_t depths = 0;
  for (int b = 0; b < 4; ++b) {
    const uint32_t d = t - (scales >> (8 * b) & 0xffu);
    depths |= (d < kFoldDepths - 1 ? d : kFoldDepths - 1) << (8 * b);
  }
  top = t;
  return depths;
}

}  // namespace moe_wgmma_layout

}  // namespace dsv4::cuda
