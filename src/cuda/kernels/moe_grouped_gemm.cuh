// Grouped routed-expert GEMM over a dispatch plan (moe_dispatch.cuh): Y[j] = X[row(j)] · W_e(j)ᵀ
// for every grouped selection j, with packed FP4 weights (MXFP4 §11.3, NVFP4 §11.6) expanded in
// registers and FP8 1×128 activations (§12). Each expert's weights are read once per 8 (decode
// launch) or 64 (prefill launch) of its rows. The plan is moe_dispatch.cuh's, SwiGLU swiglu.cuh's.
//
// Arithmetic (the same instruction sequence for every row, whatever the batch):
//   tensor cores: mma.sync m16n8k16, F16 × F16 → FP32, weight rows on the MMA's M side, token
//   rows on its N side (8 per tile). F16 holds every operand exactly: an E2M1 code as its bit
//   pattern (value·2^-14), NVFP4's e2m1·e4m3-scale (value·2^-14, a multiple of 2^-24 below
//   0.17), and the raw E4M3 activation. Products are exact; the tensor core sums them in FP32.
//   MXFP4: one 32-wide K block = two MMA steps = exactly one UE8M0 weight scale block; the block
//     sum is scaled by s_w (exact, a power of two) into a per-128 sum t, t is scaled by s_x
//     (exact) and added to the FP32 total: total += (Σ_b s_w,b · block_b) · s_x per 128 columns.
//   NVFP4: the E4M3 block scale is folded into the F16 weight (exact), eight MMA steps sum a
//     128-wide K group, scaled by s_x and added; the total is multiplied by 2^14·weight_scale_2.
//   Every FP32 step is an explicit __fmul_rn / __fmaf_rn, in K order.
// BATCH INVARIANCE: a row's output depends only on its own activations and its expert's weights.
// The K order, the MMA steps and the FP32 promotions are fixed; which tile or tile column a row
// lands in, how many rows share its expert, and which launch shape (decode or prefill) runs
// change only which MMAs are issued, never what any one output element sums. The tensor core
// computes each output column from its own B column only, so padding columns cannot leak into
// real ones. tests/cuda/moe_grouped_gemm.cpp checks rows alone against the same rows inside
// large random batches, bit for bit.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernels/gemv_mxfp4.cuh"  // ExpertWeightFormat

namespace dsv4::cuda {

// One grouped projection, for one or two weight tensors of the same shape (w1 and w3 share a
// launch: same rows, same activations).
struct MoeGroupedParams {
  ExpertWeightFormat format = ExpertWeightFormat::kMXFP4;
  int n_mats = 1;                               // 1 or 2 weight tensors
  const uint8_t* w[2] = {nullptr, nullptr};     // [E, N, K/2] packed e2m1, low nibble = even k
  // MXFP4: [E, N, K/32] ue8m0. NVFP4: [E, N, K/16] e4m3 (weight_scale).
  const uint8_t* w_scale[2] = {nullptr, nullptr};
  const float* global_scale[2] = {nullptr, nullptr};  // [E] NVFP4 weight_scale_2
  const uint8_t* x = nullptr;                   // [rows of x, K] e4m3
  const uint8_t* x_scale = nullptr;             // [rows of x, K/128] ue8m0
  const int32_t* x_row = nullptr;               // [max_sel] x row of grouped position j
                                                // (plan.sel_row), or nullptr: x row j
  const int32_t* offsets = nullptr;             // [E + 1] plan.offsets (device)
  void* y[2] = {nullptr, nullptr};              // [max_sel, N] bf16 (or fp32 with out_f32), per
                                                // tensor; rows j >= offsets[E] are not written
  int E = 0, N = 0, K = 0;
  int max_sel = 0;                              // grouped rows the launch is shaped for
  bool out_f32 = false;                         // FP32 outputs (tests: bitwise invariance of the sum)
  // MXFP4: the launch takes the FP8 wgmma kernel (moe_grouped_wgmma.cuh) whatever its shape. On
  // an H200 it ran 1.5× the F16 prefill kernel at 2K rows and 2.1–2.3× at 8K, but its sums are not
  // the F16 kernels', so the caller sets it for a class of rows that does not depend on the rest
  // of the step: the rows of long prompt chunks (moe_step.cpp, CudaOptions::fp8_expert_prefill),
  // or every row (CudaOptions::fp8_expert_decode).
  bool fp8_rows = false;
};

// N % 128 == 0, K % 128 == 0, 1 <= E <= kGroupedMaxExperts, max_sel >= 0; pointers 16-byte
// aligned (scales 4-byte (MXFP4) / 8-byte (NVFP4)). The launch shape is chosen from max_sel / E
// (a host value), never from the device counts: few rows per expert -> 8-row chunks (decode),
// many -> 64-row chunks (prefill). Both give bit-identical results. With fp8_rows, MXFP4
// launches take the FP8 wgmma kernel instead (moe_grouped_wgmma.cuh): batch-invariant too, but
// its sums differ from the F16 kernels' (FP8 tensor-core sums keep 13 fraction bits).
constexpr int kGroupedMaxExperts = 1024;
// Whether max_sel grouped rows over E experts is a prefill-shaped launch (more than 16 rows per
// expert on average): the F16 kernels' shape choice, and the size from which a prompt chunk's
// rows are worth the FP8 kernel (moe_step.cpp).
bool grouped_prefill_shaped(int64_t max_sel, int E);
void launch_moe_grouped_gemm(const MoeGroupedParams& p, cudaStream_t stream);
// Whether launch_moe_grouped_gemm takes the FP8 wgmma kernel for these parameters (the tests'
// accuracy budget depends on it).
bool grouped_launch_uses_fp8_tensor_cores(const MoeGroupedParams& p);

// The same projection for BF16 experts (BF16 checkpoints: tests, small models), on BF16
// activations (the §12 fake-quant values): y = x̃·Wᵀ in FP32, BF16 out. A simple kernel (each
// weight row read once per 8 grouped rows of its expert), batch-invariant like the FP4 one.
struct MoeGroupedBf16Params {
  int n_mats = 1;
  const __nv_bfloat16* w[2] = {nullptr, nullptr};  // [E, N, K] bf16
  const __nv_bfloat16* x = nullptr;                // [rows of x, K] bf16
  const int32_t* x_row = nullptr;                  // [max_sel] (plan.sel_row), or nullptr: row j
  const int32_t* offsets = nullptr;                // [E + 1] plan.offsets (device)
  __nv_bfloat16* y[2] = {nullptr, nullptr};        // [max_sel, N] bf16
  int E = 0, N = 0, K = 0, max_sel = 0;
};
// N % 8 == 0, K % 8 == 0, 1 <= E <= kGroupedMaxExperts; x and w 16-byte aligned.
void launch_moe_grouped_bf16(const MoeGroupedBf16Params& p, cudaStream_t stream);

// The data layout shared by the kernel and its host emulation (tests/cuda/moe_grouped_gemm.cpp).
// Names: lane = g·4 + q (g = lane/4 picks the weight rows g and g+8 of the warp's 16-row MMA
// tile and the token column g of a B tile; q = lane%4). A K group is 128 columns (one
// activation scale block) = 4 blocks of 32 (one MXFP4 weight scale block, two MMA k16 steps).
//   Weights: lane q loads the 16 bytes of block q of the group (one 16-byte load per row),
//     then a 4×4 transpose inside the quad (quad_send/quad_recv, two xor-shuffles; the decode
//     launches do the same permutation through shared memory) leaves lane q
//     holding, for every block b, the word W_b = bytes [16b + 4q, 16b + 4q + 4) = columns
//     c = 32b + 8q + i, i = 0..7 (nibble i of the word).
//   MMA step s (0, 1) of block b, for this lane's row: A register pair (a0|a1 for row g,
//     a2|a3 for row g+8 … see f16x2_of_step) = F16 pairs (nibble 4s, nibble 4s+2) and
//     (nibble 4s+1, nibble 4s+3): the MMA's K slots 2q, 2q+1 and 2q+8, 2q+9 hold columns
//     32b + 8q + {4s, 4s+2} and 32b + 8q + {4s+1, 4s+3}.
//   Activations: staged in shared memory as F16 per token, each run of 8 columns permuted by
//     x_position (x_i at position x_position(i)), so that one 16-byte read at column 32b + 8q
//     returns the B registers of both steps in order: (b0, b1) of step s = words 2s, 2s+1.
namespace moe_gemm_layout {

constexpr int kGroupK = 128;   // columns per activation scale block (§12)
constexpr int kBlockK = 32;    // columns per MXFP4 scale block = per MMA block (two k16 steps)
constexpr int kBlocks = kGroupK / kBlockK;
constexpr int kTileRows = 8;   // tokens per MMA B tile (the MMA's n)
constexpr int kWarpRows = 16;  // weight rows per warp (the MMA's m)

// PTX prmt.b32 (CUDA __byte_perm): byte i of the result is byte sel_i of {b:a} (0-3 = a, 4-7 = b).
__host__ __device__ inline uint32_t byte_perm(uint32_t a, uint32_t b, uint32_t sel) {
#ifdef __CUDA_ARCH__
  return __byte_perm(a, b, sel);
#else
  const uint64_t ab = uint64_t(a) | (uint64_t(b) << 32);
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= uint32_t((ab >> (8 * ((sel >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
  return r;
#endif
}

// A word of 8 E2M1 nibbles (nibble i = column 8q + i of a block) → the F16 words of the MMA's
// A registers for this lane's row: lo[s] = (nibble 4s, nibble 4s+2), hi[s] = (nibble 4s+1,
// nibble 4s+3) as F16 pairs (low half first). Each F16 is the nibble's bit pattern placed as
// sign | exponent(2) | mantissa(1) at bits 15, 11..9: exactly e2m1 · 2^-14 (0.5 becomes the
// F16 subnormal 2^-15). The high byte of each F16 is built for four nibbles at once, the low
// byte is zero.
__host__ __device__ inline void e2m1_word_to_f16x2(uint32_t w, uint32_t (&lo)[2], uint32_t (&hi)[2]) {
  // hb_even byte i = high byte of the F16 of nibble 2i, hb_odd byte i = that of nibble 2i+1.
  const uint32_t hb_even = ((w << 1) & 0x0e0e0e0eu) | ((w << 4) & 0x80808080u);
  const uint32_t hb_odd = ((w >> 3) & 0x0e0e0e0eu) | (w & 0x80808080u);
  lo[0] = byte_perm(hb_even, 0u, 0x1404u);  // (nibble 0, nibble 2)
  hi[0] = byte_perm(hb_odd, 0u, 0x1404u);   // (nibble 1, nibble 3)
  lo[1] = byte_perm(hb_even, 0u, 0x3424u);  // (nibble 4, nibble 6)
  hi[1] = byte_perm(hb_odd, 0u, 0x3424u);   // (nibble 5, nibble 7)
}

// The 4×4 word transpose inside a quad, one xor-shuffle round per bit (round 0: lane bit 0 with
// word bit 0 over xor 1; round 1: bit 1 over xor 2). Lane q sends send[0..1], receives from lane
// q ^ (1 << round) into recv[0..1]. Before: w[i] = word i of block q; after: w[b] = word q of
// block b.
__host__ __device__ inline void quad_send(const uint32_t (&w)[4], int q, int round, uint32_t (&send)[2]) {
  const bool up = (q >> round) & 1;  // this lane keeps the words whose round bit equals its own
  if (round == 0) {
    send[0] = up ? w[0] : w[1];
    send[1] = up ? w[2] : w[3];
  } else {
    send[0] = up ? w[0] : w[2];
    send[1] = up ? w[1] : w[3];
  }
}
__host__ __device__ inline void quad_recv(uint32_t (&w)[4], int q, int round, const uint32_t (&recv)[2]) {
  const bool up = (q >> round) & 1;
  if (round == 0) {
    if (up) { w[0] = recv[0]; w[2] = recv[1]; } else { w[1] = recv[0]; w[3] = recv[1]; }
  } else {
    if (up) { w[0] = recv[0]; w[1] = recv[1]; } else { w[2] = recv[0]; w[3] = recv[1]; }
  }
}

// The same transpose through shared memory (the decode launches): per row, 32 slots of four
// words. Lane (g, q) stores word j of its block q at word q of slot trans_slot(g, j), then
// reads slot trans_slot(g, q) whole: word b of it is word q of block b. The rotation by 2j
// spreads each store instruction and each quarter-warp of 16-byte reads over all 32 banks.
__host__ __device__ constexpr int trans_slot(int g, int j) { return 8 * j + ((g + 2 * j) & 7); }

// MXFP4 scales, the fast form: for a UE8M0 byte 1..254 the FP32 2^(e-127) is the byte shifted
// into the exponent field, two instructions; 0 (2^-127, an FP32 subnormal) and 0xFF (NaN) need
// the select form (e8m0_to_float_select). ue8m0_any_special(w) is nonzero iff some byte of w is
// 0x00 or 0xFF: the zero-byte test (v − 0x01…) & ~v on w (0x00) and on ~w (0xFF), muxed per
// bit by w's own bit 7, which one of the two tests needs set and the other clear. The classic
// test can flag a byte above a real special byte by its borrow, never when there is none.
__host__ __device__ constexpr uint32_t ue8m0_any_special(uint32_t w) {
  const uint32_t zero = w - 0x01010101u, ones = ~w - 0x01010101u;
  return ((zero & ~w) | (ones & w)) & 0x80808080u;
}
// Byte b of a word of plain (1..254) UE8M0 scales as its FP32 bit pattern.
__host__ __device__ constexpr uint32_t ue8m0_plain_bits(uint32_t w, int b) {
  return (b < 3 ? w << (23 - 8 * b) : w >> 1) & 0x7f800000u;
}

// NVFP4: the E4M3 scale of this lane's 8 columns of block b is byte nv_scale_byte(b, q) of the
// row's 8 scale bytes of the group (one per 16 columns: (32b + 8q) / 16).
__host__ __device__ constexpr int nv_scale_byte(int b, int q) { return 2 * b + (q >> 1); }

// Position of column 8q + i (i = 0..7) inside its staged run of 8 F16 values: x0 x2 x1 x3 x4 x6
// x5 x7, so that words 2s, 2s+1 of the run are the B registers (b0 = K slots 2q, 2q+1; b1 = 2q+8,
// 2q+9) of step s, matching f16x2 lo/hi above.
__host__ __device__ constexpr int x_position(int i) { return (i & 4) | ((i & 1) << 1) | ((i >> 1) & 1); }

// 8 E4M3 bytes of a run (little-endian in lo, hi) -> the four E4M3 pairs (low 16 bits of each
// word, first element in the low byte) whose F16 conversions are the run's staged words in
// x_position order: (x0, x2), (x1, x3), (x4, x6), (x5, x7).
__host__ __device__ inline void run_pairs(uint32_t lo, uint32_t hi, uint32_t (&pairs)[4]) {
  const uint32_t a = byte_perm(lo, 0u, 0x3120u), b = byte_perm(hi, 0u, 0x3120u);  // x0 x2 x1 x3
  pairs[0] = a & 0xffffu;
  pairs[1] = a >> 16;
  pairs[2] = b & 0xffffu;
  pairs[3] = b >> 16;
}

// Which work a CTA's item is: items are (token chunk, weight tile) pairs, chunk-minor so that
// consecutive items read the same weights (chunks of one expert sit next to each other).
// chunk_start[e] = Σ_{e' < e} ceil(count_e' / chunk_rows), e = 0..E.
struct GroupedItem {
  int expert, j0, n_tok, mat, n0;  // grouped rows [j0, j0 + n_tok) × weight rows [n0, n0 + tile)
};
__host__ __device__ inline GroupedItem decode_item(int item, int n_chunks, const int* chunk_start, int E,
                                                   const int* offsets, int chunk_rows, int tiles_per_mat,
                                                   int tile_rows) {
  const int chunk = item % n_chunks, tile = item / n_chunks;
  int lo = 0, hi = E;  // the expert e with chunk_start[e] <= chunk < chunk_start[e + 1]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (chunk_start[mid] <= chunk) lo = mid; else hi = mid;
  }
  GroupedItem it;
  it.expert = lo;
  it.j0 = offsets[lo] + (chunk - chunk_start[lo]) * chunk_rows;
  it.n_tok = offsets[lo + 1] - it.j0 < chunk_rows ? offsets[lo + 1] - it.j0 : chunk_rows;
  it.mat = tile / tiles_per_mat;
  it.n0 = (tile % tiles_per_mat) * tile_rows;
  return it;
}

}  // namespace moe_gemm_layout

}  // namespace dsv4::cuda
