// The matmul dispatch (matmul.h) and its rules. Each rule states its reason; the numbers are
// predictions until bench/cuda_matmul_bench.cpp measures them on an H200 (bench/results/).
#include "cuda/matmul.h"

#include "cuda/kernels/gemm_lt.cuh"
#include "cuda/kernels/skinny_gemm.cuh"
#include "util/error.h"

namespace dsv4::cuda {

namespace {

// Rule 1, FP8 weights: the skinny kernel up to 128 rows. Reason (prediction): it reads each
// weight byte once per 64 rows and is bound by HBM up to about 64 rows (≈ 80 % of copy bandwidth
// on the wide Flash matrices, M = 1…64 within ~20 % of each other); at 65–128 rows it makes two
// weight passes and the emulated FP8 MMA (E4M3 → F16 + HMMA on sm_90) starts to bind, yet it should
// still match cuBLASLt, whose block-scaled kernels at ≤ 128 rows run one wave of mostly idle
// 128-row tiles plus a scale-conversion launch. Above 128 rows cuBLASLt's wgmma wins (it should
// reach ≥ 50 % of the FP8 peak from ~512 rows on the wide matrices). Keeping decode, speculative
// verify and batched decode (≤ 128 rows) on one kernel also keeps their rows bit-identical.
constexpr int kSkinnyMaxRowsFp8 = 128;
// Rule 2, BF16 weights (router, compressor, indexer weights_proj, LM head): the skinny kernel
// up to 64 rows. Reason (prediction): BF16 MMA does half the FP8 work per instruction, so the
// skinny kernel turns compute-bound near 64 rows (the LM head at 64 rows: ≈ 68 GFLOP, ≈ 1 GB);
// beyond, cuBLASLt's BF16 GEMM (~700 TFLOP/s dense) is ahead.
constexpr int kSkinnyMaxRowsBf16 = 64;

}  // namespace

int matmul_skinny_max_rows(bool fp8) { return fp8 ? kSkinnyMaxRowsFp8 : kSkinnyMaxRowsBf16; }

MatmulPath matmul_choose(bool fp8, int M, int N, int K) {
  (void)N;
  (void)K;  // no shape rule yet: the bench's narrow shapes (wkv, router) decide whether one pays
  return M <= matmul_skinny_max_rows(fp8) ? MatmulPath::kSkinny : MatmulPath::kLt;
}

MatmulPath matmul(const MatmulParams& p, cudaStream_t stream) {
  DSV4_CHECK_MSG(p.M >= 0, "matmul M=", p.M);
  if (p.M == 0) return MatmulPath::kAuto;
  DSV4_CHECK(p.w && p.x && p.y);
  const bool fp8 = p.w_scale != nullptr;
  DSV4_CHECK_MSG(!fp8 || p.x_scale, "FP8-block weights need FP8 activations (x_scale)");
  const MatmulPath path = p.path == MatmulPath::kAuto ? matmul_choose(fp8, p.M, p.N, p.K) : p.path;
  if (path == MatmulPath::kLt) {
    LtGemmParams q;
    q.fp8 = fp8;
    q.w = p.w;
    q.w_scale = p.w_scale;
    q.x = p.x;
    q.x_scale = p.x_scale;
    q.y = p.y;
    q.out_bf16 = p.out_bf16;
    q.M = p.M;
    q.N = p.N;
    q.K = p.K;
    if (lt_gemm(q, stream)) return MatmulPath::kLt;
  }
  SkinnyGemmParams q;
  q.kind = fp8 ? SkinnyKind::kFp8 : SkinnyKind::kBf16;
  q.w = p.w;
  q.w_scale = p.w_scale;
  q.x = p.x;
  q.x_scale = p.x_scale;
  q.y = p.y;
  q.out_bf16 = p.out_bf16;
  q.M = p.M;
  q.N = p.N;
  q.K = p.K;
  launch_skinny_gemm(q, stream);
  return MatmulPath::kSkinny;
}

void matmul_reserve() { lt_reserve(); }
size_t matmul_workspace_bytes() { return lt_workspace_bytes(); }

}  // namespace dsv4::cuda
