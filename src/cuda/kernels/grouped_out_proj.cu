// Grouped output projection launcher; see grouped_out_proj.cuh for the contract.
// wo_a is a GEMM over the G·R weight rows in which row n reads the o slice of its group n / R:
// the skinny tensor-core kernel (skinny_gemm.cuh) with a per-group x offset. FP8 weights expand
// exactly to BF16 in registers (kFp8AsBf16) and meet the BF16 activations in BF16 MMAs, the tile
// scale applied per 128-wide K block (a power of two: exact) — the reference's BF16 einsum
// (§4.5, §12) with FP32 accumulation. One weight pass serves 64 tokens, so decode (T = 1) and a
// 64-token verify read wo_a once, and every token's arithmetic is the same for any T.
#include "cuda/kernels/grouped_out_proj.cuh"

#include "cuda/kernels/device_common.cuh"
#include "cuda/kernels/skinny_gemm.cuh"
#include "util/error.h"

namespace dsv4::cuda {

void launch_grouped_out_proj(const GroupedOutProjParams& p, cudaStream_t stream) {
  DSV4_CHECK(p.o && p.z);
  DSV4_CHECK_MSG((p.w_fp8 != nullptr) != (p.w_bf16 != nullptr), "exactly one of w_fp8 / w_bf16");
  DSV4_CHECK_MSG(p.G >= 1 && p.R >= 1 && int64_t(p.G) * p.R <= INT32_MAX, "G=", p.G, " R=", p.R);
  DSV4_CHECK_MSG(p.T >= 1, "T=", p.T);
  // A warp's 32 weight rows must share one group (and so one o slice).
  DSV4_CHECK_MSG(p.G == 1 || p.R % 32 == 0, "grouped output projection needs o_lora_rank % 32 == 0, R=", p.R);
  DSV4_CHECK_MSG(!p.w_fp8 || p.w_scale, "FP8 wo_a without scales");
  SkinnyGemmParams q;
  q.kind = p.w_fp8 ? SkinnyKind::kFp8AsBf16 : SkinnyKind::kBf16;
  q.w = p.w_fp8 ? static_cast<const void*>(p.w_fp8) : static_cast<const void*>(p.w_bf16);
  q.w_scale = p.w_scale;
  q.x = p.o;
  q.ldx = int64_t(p.G) * p.K;                 // one token's o: G groups of K (§4.5: heads of a group contiguous)
  q.rows_per_group = p.G > 1 ? p.R : 0;       // weight row n reads o columns (n / R)·K …
  q.group_stride = p.G > 1 ? p.K : 0;
  q.y = p.z;
  q.M = p.T;
  q.N = p.G * p.R;
  q.K = p.K;
  q.out_bf16 = true;
  launch_skinny_gemm(q, stream);
}

}  // namespace dsv4::cuda
