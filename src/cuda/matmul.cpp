// The matmul dispatch (matmul.h) and its rules. Each rule states its reason, with the numbers
// bench/cuda_matmul_bench.cpp measured on an H200 (bench/results/2026-12-02-h200-batched-runtime.md).
#include "cuda/matmul.h"

#include "cuda/kernels/gemm_lt.cuh"
#include "cuda/kernels/grouped_out_proj.cuh"
#include "cuda/kernels/skinny_gemm.cuh"
#include "cuda/kernels/skinny_wgmma.cuh"
#include "cuda/kernels/to_bf16.cuh"
#include "util/error.h"

namespace dsv4::cuda {

namespace {

// Rule 1, FP8 weights: the skinny kernel up to 128 rows. Reason: its rows are bit-identical for
// every row count, so a decode row, a speculative verify row and a row of a batch of 128 give the
// same logits (the batch-independence guarantee, tests/cuda/batched_runtime.cpp); at decode sizes
// it streams the wide matrices near the copy bandwidth: wq_b (32768×1024) at 1–8 rows in 11.0 µs,
// 72–73 % (the narrow ones less: wq_a 1024×4096 at 1 row 5.03 µs, 19.7 %). Its cost, measured
// (2026-12-04, after the explicit F16 conversion and the 16-row passes): at 33–128 rows it falls
// to 35–17 % of the copy bandwidth — wq_b at 64 rows 32.3 µs (27.6 %) against cuBLASLt's 16.4 µs
// (54.2 %). A faster row-invariant kernel for 9–128 rows, not a switch to cuBLASLt, is the planned
// fix (issue 12). Above 128 rows cuBLASLt's block-scaled FP8 GEMM: wq_b at 2,048 rows 135 µs (72 %
// of the FP8 peak), at 8,192 rows 519 µs (75 %).
constexpr int kSkinnyMaxRowsFp8 = 128;
// Rule 1b, FP8 weights with K ≥ 4096 and N ≤ 2048 (Flash's wq_a, wkv, shared w1/w3): the same
// rows go to the skinny GEMM on wgmma, equally row invariant. Reason: on these narrow, deep
// matrices it splits K over a cluster and reads the weights once per 128 rows through the FP8
// tensor core. Measured on an H100 against the F16 skinny kernel, µs at 1 / 8 / 64 / 128 rows
// (bench/results/2026-12-05-h100-fold-and-wgmma-skinny.md): wq_a 1024×4096 5.97 / 6.09 / 11.3 /
// 19.4 against 5.62 / 5.75 / 14.6 / 24.2; wkv 512×4096 4.60 / 4.65 / 7.85 / 12.6 against 4.28 /
// 4.26 / 9.39 / 13.8; shared w1 2048×4096 8.00 / 8.19 / 16.4 / 31.2 against 8.99 / 9.11 / 24.3 /
// 42.9. A layer's three together gain at every row count. On the wide or shallow ones (wq_b,
// the indexer's wq_b, shared w2; wo_b is even) the F16 kernel is as fast or faster at 1–8 rows.
bool prefers_wgmma_skinny(int N, int K) { return K >= 4096 && N <= 2048; }
// Rule 2, BF16 weights (router, compressor, indexer weights_proj, LM head): the skinny kernel up
// to 64 rows, for the same row invariance. Measured on the full LM head (129280×4096): 1 row
// 261 µs (95.6 % of copy); 64 rows 535 µs against cuBLASLt's 279 µs — the price of invariant
// logits at batch 64. BF16 MMA does half the FP8 work per instruction, so past 64 rows the skinny
// kernel is compute-bound and cuBLASLt's BF16 GEMM takes over.
constexpr int kSkinnyMaxRowsBf16 = 64;

// A kernel's parameters (SkinnyGemmParams, LtGemmParams) carrying the problem of p; the
// kernel-specific fields keep their defaults.
template <typename KernelParams>
KernelParams problem_of(const MatmulParams& p) {
  KernelParams q;
  q.w = p.w;
  q.w_scale = p.w_scale;
  q.x = p.x;
  q.x_scale = p.x_scale;
  q.y = p.y;
  q.out_bf16 = p.out_bf16;
  q.M = p.M;
  q.N = p.N;
  q.K = p.K;
  return q;
}

// The skinny kernels' parameters of a problem (FP8 weights when it has weight scales).
SkinnyGemmParams skinny_params(const MatmulParams& p) {
  SkinnyGemmParams q = problem_of<SkinnyGemmParams>(p);
  q.kind = p.w_scale ? SkinnyKind::kFp8 : SkinnyKind::kBf16;
  return q;
}

}  // namespace

int matmul_skinny_max_rows(bool fp8) { return fp8 ? kSkinnyMaxRowsFp8 : kSkinnyMaxRowsBf16; }

MatmulPath matmul_choose(bool fp8, int M, int N, int K) {
  if (M > matmul_skinny_max_rows(fp8)) return MatmulPath::kLt;
  return fp8 && prefers_wgmma_skinny(N, K) ? MatmulPath::kWgmma : MatmulPath::kSkinny;
}

MatmulPath matmul(const MatmulParams& p, cudaStream_t stream) {
  DSV4_CHECK_MSG(p.M >= 0, "matmul M=", p.M);
  if (p.M == 0) return MatmulPath::kAuto;
  DSV4_CHECK(p.w && p.x && p.y);
  const bool fp8 = p.w_scale != nullptr;
  DSV4_CHECK_MSG(!fp8 || p.x_scale, "FP8-block weights need FP8 activations (x_scale)");
  const MatmulPath path = p.path == MatmulPath::kAuto ? matmul_choose(fp8, p.M, p.N, p.K) : p.path;
  if (path == MatmulPath::kLt) {
    LtGemmParams q = problem_of<LtGemmParams>(p);
    q.fp8 = fp8;
    if (lt_gemm(q, stream)) return MatmulPath::kLt;
  }
  DSV4_CHECK_MSG(path != MatmulPath::kWgmma || fp8, "the wgmma skinny GEMM takes FP8 weights only");
  const SkinnyGemmParams q = skinny_params(p);
  if (path == MatmulPath::kWgmma) {
    launch_skinny_wgmma(q, stream);
    return MatmulPath::kWgmma;
  }
  launch_skinny_gemm(q, stream);
  return MatmulPath::kSkinny;
}

// Rule 1c, two rule-1b linears of the same activations: one launch. Reason: at decode sizes a
// narrow matrix costs about a launch's latency, not its bytes (wkv 512×4096 at 1 row 4.6 µs for
// 2 MB, rule 1b's H100 figure); one launch streams both matrices' tiles side by side. Measured
// on an H100, two calls against one launch, µs at 1 / 8 / 64 / 128 rows
// (bench/results/2026-12-07-h100-linear-pairs.md): wkv + wq_a 11.4 / 11.4 / 19.9 / 32.9 against
// 7.2 / 7.3 / 13.5 / 22.6; shared w1 + w3 16.4 / 16.7 / 33.4 / 63.4 against 11.5 / 11.7 / 28.5 /
// 53.9.
bool matmul_pair(const MatmulParams& a, const MatmulParams& b, cudaStream_t stream) {
  DSV4_CHECK_MSG(a.x == b.x && a.x_scale == b.x_scale && a.M == b.M && a.K == b.K && a.out_bf16 == b.out_bf16,
                 "matmul_pair: the two linears must share their activations, rows and output type");
  const bool fp8 = a.w_scale && b.w_scale;
  const bool one_launch = fp8 && a.M > 0 && a.path == MatmulPath::kAuto && b.path == MatmulPath::kAuto &&
                          matmul_choose(true, a.M, a.N, a.K) == MatmulPath::kWgmma &&
                          matmul_choose(true, b.M, b.N, b.K) == MatmulPath::kWgmma && skinny_wgmma_pairable(a.N, b.N, a.K);
  if (!one_launch) {
    matmul(a, stream);
    matmul(b, stream);
    return false;
  }
  launch_skinny_wgmma_pair(skinny_params(a), skinny_params(b), stream);
  return true;
}

// Rule 3, the grouped output projection wo_a (8 groups × 1024 rows × 4096 for Flash): the
// skinny kernel for every row but a long prompt chunk's (row-invariant up to any T), cuBLASLt per
// group for those. Reason: the skinny kernel serves 64 rows per weight pass, measured at 48.9 µs
// for 64 rows and 93.7 µs for 128 (2026-12-04-h200-skinny-passes.md, 18.6 % of copy), ≈ 1.5 ms
// for a 2,048-row pass, ≈ 95 TFLOP/s; cuBLASLt's BF16 GEMM runs near its peak at M = 2,048.
bool grouped_out_proj_lt(const GroupedOutProjParams& p, __nv_bfloat16* w_group, cudaStream_t stream) {
  DSV4_CHECK(p.o && p.z && p.T >= 1 && p.G >= 1 && p.R >= 1 && p.K >= 1);
  DSV4_CHECK_MSG((p.w_fp8 != nullptr) != (p.w_bf16 != nullptr), "exactly one of w_fp8 / w_bf16");
  DSV4_CHECK_MSG(!p.w_fp8 || (p.w_scale && w_group), "FP8 wo_a needs its scales and a BF16 group buffer");
  for (int g = 0; g < p.G; ++g) {
    const __nv_bfloat16* w = p.w_bf16 ? p.w_bf16 + int64_t(g) * p.R * p.K : w_group;
    if (p.w_fp8) launch_fp8_rows_to_bf16({p.w_fp8, p.w_scale, g * p.R, p.R, p.K, w_group}, stream);
    LtGemmParams q;
    q.fp8 = false;
    q.w = w;
    q.x = p.o + int64_t(g) * p.K;
    q.y = p.z + int64_t(g) * p.R;
    q.M = p.T;
    q.N = p.R;
    q.K = p.K;
    q.ldx = int64_t(p.G) * p.K;
    q.ldy = int64_t(p.G) * p.R;
    if (!lt_gemm(q, stream)) return false;
  }
  return true;
}

void matmul_reserve() { lt_reserve(); }
size_t matmul_workspace_bytes() { return lt_workspace_bytes(); }

}  // namespace dsv4::cuda
