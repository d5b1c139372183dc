// The FP8 skinny GEMM on Hopper's FP8 tensor cores (wgmma), for up to 128 rows (decode, batched
// decode, speculative verify): y = x·Wᵀ with E4M3 weights in 128×128 UE8M0 tiles and E4M3
// activations in 1×128 UE8M0 blocks — SkinnyKind::kFp8 of skinny_gemm.cuh without groups, as
// matmul.h's MatmulPath::kWgmma.
//
// Arithmetic (§11.2, §12): per 128-wide K group, four chained wgmma k32 steps (the first from
// zero) sum the group's exact E4M3 products in the tensor core's e8m13 accumulator
// (tests/cuda/fp8_accumulator_model.h), and the sum is promoted once in FP32:
// total += D·(s_w·s_x), the product of two powers of two being exact. DeepGEMM's and the
// reference's scheme; the F16 skinny kernel instead sums eight F16 MMAs per group.
//
// ROW INVARIANCE (matmul.h): a row's sums do not depend on M. The launch shape — the split of K
// over the blocks of a cluster, and which groups each sums in which order — is a function of
// (N, K) only; the cluster's partial totals are added in rank order; and a token column's
// tensor-core sum does not depend on the other columns of the wgmma (nor on its width n, which
// follows M: 8, 16, 32, 64 or 128 tokens).
//
// Layout: a block is one warpgroup and 64 weight rows. Per K group it stages the weight tile
// [64][128] and the token tile [n][128] E4M3 in shared memory, K-major in the 128-byte swizzle
// (swizzle128.cuh), read by descriptor.
#pragma once

#include <cuda_runtime_api.h>

#include "cuda/kernels/skinny_gemm.cuh"

namespace dsv4::cuda {

// The split of K: the blocks of one cluster (1, 2, 4, 8), block r summing K groups r, r + c, ….
// A function of (N, K) only.
int skinny_wgmma_cluster(int N, int K);

// kind == kFp8, M in [1, 128], N >= 1, K % 128 == 0, no groups (rows_per_group == 0), ldx and ldy
// 0 (dense rows), w and x 16-byte aligned; rows_per_pass is ignored (one pass serves every row).
void launch_skinny_wgmma(const SkinnyGemmParams& p, cudaStream_t stream);

// Two linears of the same activations in one launch: a's row tiles, then b's, each matrix with
// the split its own launch has, so that every output is bit for bit launch_skinny_wgmma's (one
// launch instead of two: a narrow matrix at few rows costs about a launch's latency, whatever
// its bytes). Both as launch_skinny_wgmma requires, with the same x, x_scale, M, K and output
// type, and skinny_wgmma_pairable(a.N, b.N, K): a cluster is one size for the whole launch.
bool skinny_wgmma_pairable(int N_a, int N_b, int K);
void launch_skinny_wgmma_pair(const SkinnyGemmParams& a, const SkinnyGemmParams& b, cudaStream_t stream);

}  // namespace dsv4::cuda
