// The FP4 GEMV of the host's vector units: rows of an MXFP4 (§11.3) or NVFP4 (§11.6) weight times
// a few FP32 activation rows, each group of columns of the weight decoded in registers (a lookup
// of the E2M1 nibble, the block scale) and multiplied straight into the accumulators, never
// expanded to an FP32 tile in memory. It is the kernel that routed experts kept in host memory
// need (issue 17), and linear_rows uses it for every FP4 linear of the CPU backend.
//
// Its arithmetic is exactly that of expanding the row with WeightMatrix::dequant_rows and taking
// the CPU backend's 16-lane dot (cpu/tile_dot.h): the same FP32 weights (e2m1 · scale, then
// · global scale for NVFP4), the same products, the same per-lane sums in column order, the same
// final lane sum, and no fused multiply-add. So it is bit-identical to the expanded path whichever vector kernel runs,
// and the CPU backend's bit-for-bit tests (chunking, batching, rollback) do not depend on which
// path ran.
#pragma once

#include <cstdint>

#include "model/quant.h"

namespace dsv4 {

// The kernel's builds for the host's vector extensions, from slowest to fastest.
enum class Fp4Kernel {
  kNone,    // no fused kernel on this host: linear_rows expands rows instead
  kAvx2,    // 8 lanes: two registers per 16-lane sum, an 8-entry magnitude lookup and a sign flip
  kAvx512,  // AVX-512 F, BW, VL + VBMI, 16 lanes: one register per 16-lane sum, a 16-entry lookup of the scaled values
};
const char* to_string(Fp4Kernel k);
bool fp4_kernel_runs_here(Fp4Kernel k);
// The fastest that runs here, or the one the environment names: DSV4_FP4_KERNEL=avx2|avx512 (to
// compare the two inside one program, e.g. the host tier's decode step, whose bursts of a few
// hundred microseconds per layer behave otherwise than a benchmark's long streams). A name that
// is not a kernel, or one this host cannot run, is an error.
Fp4Kernel fp4_best_kernel();

// Whether this host runs a fused kernel (x86-64 with AVX2); where not, linear_rows expands rows.
inline bool fp4_fused_available() { return fp4_best_kernel() != Fp4Kernel::kNone; }

// y[t·y_stride + i] = x[t·K : (t+1)·K] · W[r0 + i]  for t < n, i < nr, where K = W.cols.
// W is MXFP4 or NVFP4; a NaN MXFP4 scale byte raises the dequantiser's error naming the tensor.
// `kernel` must run here (tests pick one to compare them; everyone else takes the default).
void fp4_rows_dot(const WeightMatrix& w, int64_t r0, int64_t nr, const float* x, int64_t n, float* y,
                  int64_t y_stride, Fp4Kernel kernel = fp4_best_kernel());

}  // namespace dsv4
