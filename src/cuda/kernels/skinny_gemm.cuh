// Tensor-core GEMM for few rows (decode, batched decode, speculative verify): y = x·Wᵀ, the weights
// streamed from HBM about once per call. The large-M GEMM is gemm_lt.cuh; matmul.h chooses.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// What the weights and activations are (architecture.md §11.2, §12):
//   kFp8:      E4M3 weights in 128×128 UE8M0 tiles × E4M3 1×128 activations (both expanded exactly
//              to F16 in registers, m16n8k16 F16 MMAs), each 128-wide K block summed by the tensor
//              core, then scaled by s_x·s_w and added in FP32 — the reference's Σ_blocks s_x·s_w·(q_x·q_w).
//   kBf16:     BF16 weights × BF16 activations, FP32 accumulation (m16n8k16 BF16 MMA).
//   kFp8AsBf16: E4M3 weights in UE8M0 tiles × BF16 activations: the BF16 einsum of wo_a (§4.5) —
//              E4M3 values expanded exactly to BF16 in registers, the power-of-two tile scale
//              applied per 128-wide K block (exact), FP32 accumulation.
enum class SkinnyKind { kFp8, kBf16, kFp8AsBf16 };

// y[m][n] = Σ_k x[m][xoff(n) + k] · W[n][k] for m < M, n < N, with
// xoff(n) = (n / rows_per_group) · group_stride (the grouped wo_a: group g reads its own o slice).
struct SkinnyGemmParams {
  SkinnyKind kind = SkinnyKind::kFp8;
  const void* w = nullptr;           // [N, K] e4m3 (kFp8, kFp8AsBf16) or bf16 (kBf16)
  const uint8_t* w_scale = nullptr;  // [ceil(N/128), K/128] ue8m0 (kFp8, kFp8AsBf16)
  const void* x = nullptr;           // [M, ldx] e4m3 (kFp8) or bf16
  const uint8_t* x_scale = nullptr;  // [M, K/128] ue8m0 (kFp8)
  int64_t ldx = 0;                   // elements between rows of x (0: K)
  int rows_per_group = 0;            // 0: no groups (xoff = 0)
  int64_t group_stride = 0;          // elements of x between groups
  void* y = nullptr;                 // [M, ldy] fp32, or bf16 when out_bf16
  int64_t ldy = 0;                   // elements between rows of y (0: N)
  int M = 0, N = 0, K = 0;
  bool out_bf16 = true;
  int rows_per_pass = 0;             // rows of x one weight pass serves: 8, 16, 32, 64; 0: the rule
};

// Shape of the launch, a function of (N, K) only — never of M — so that a row's arithmetic (the
// K order, the split of K and the order the splits are summed in) is the same for every M: rows
// of one call are bit-identical to the same rows computed alone (matmul.h: row invariance).
// K is cut into units of 128 bytes of a weight row (128 E4M3 or 64 BF16 values); split s of
// n_split sums units s, s + n_split, … and the splits are added in order s = 0, 1, ….
struct SkinnySplit {
  int k_warps = 1;   // warps of one block that split K (1, 2, 4, 8)
  int cluster = 1;   // blocks of one thread-block cluster that split K further (1, 2, 4, 8)
  __host__ __device__ int n_split() const { return k_warps * cluster; }
};
SkinnySplit skinny_split(int N, int n_units);

// Rows of x one weight pass serves when the caller leaves it to the launcher (rows_per_pass = 0).
// A pass of up to 64 rows is one block sweep over the weights with 8 MMA column tiles; M rows run
// ceil(M / rows per pass) passes side by side. A row's arithmetic is the same for every choice,
// so the rule is free to follow speed alone (its measured reason is at its definition).
int skinny_rows_per_pass(SkinnyKind kind);

// N >= 1, M >= 1, K a multiple of 128 (kFp8, kFp8AsBf16) or 64 (kBf16); w, x 16-byte aligned,
// ldx·sizeof(x element) and group_stride·sizeof(x element) multiples of 16; with groups,
// rows_per_group % 32 == 0 (a warp's 32 rows stay in one group).
void launch_skinny_gemm(const SkinnyGemmParams& p, cudaStream_t stream);

// The register layout shared by the kernel and the host emulation test (tests/cuda/matmul.cpp).
// A warp owns 32 weight rows (two 16-row MMA A tiles) and 8 rows of x per MMA B tile. Lane l
// (g = l/4, t = l%4) loads, per 128-byte unit and half h, the 16-byte weight chunk at byte
// chunk_byte(l, h) of rows g, g+8, g+16, g+24, and the x chunk(s) covering the same K values.
// Because Σ_k is order-free, the K values a lane feeds the MMA need not be the ones the PTX
// fragment layout names: each lane passes its own contiguous bytes, and A and B agree on them.
namespace skinny_layout {
constexpr int kUnitBytes = 128;  // weight bytes of one row per K unit
constexpr int kChunkBytes = 16;  // one 16-byte load
__host__ __device__ constexpr int chunk_byte(int lane, int h) { return 64 * h + 16 * (lane % 4); }
__host__ __device__ constexpr int chunk_row(int lane, int i) { return lane / 4 + 8 * i; }
// kFp8 and kBf16: MMA step s (0, 1) of half h takes words 2s and 2s+1 of the weight chunk and the
// same words of the x chunk. kBf16 (one m16n8k16): word 2s as the a0/a1 registers of its rows,
// word 2s+1 as a2/a3, the x words as b0, b1. kFp8 (two m16n8k16 on E4M3 expanded to F16): MMA m
// takes word 2s + m, its bytes 0, 1 as a0/a1 (x: b0) and bytes 2, 3 as a2/a3 (x: b1).
__host__ __device__ constexpr int word_of_step(int s, int reg) { return 2 * s + reg; }
// kFp8AsBf16 (m16n8k16 on expanded weights): a 16-byte weight chunk is 16 K values, four MMA
// steps s = 0..3: weight word s gives a0/a1 (bytes 0, 1 of the word) and a2/a3 (bytes 2, 3);
// x (BF16, 32 bytes for the same K) gives b0, b1 = words 2(s%2), 2(s%2)+1 of x chunk s/2.
__host__ __device__ constexpr int x_chunk_bytes_fp8_as_bf16(int lane, int h, int c) {
  return 2 * chunk_byte(lane, h) + 16 * c;
}
}  // namespace skinny_layout

}  // namespace dsv4::cuda
