// Linear layers and RMSNorm: y = x·Wᵀ from a WeightMatrix in its packed form (expanded a tile of
// rows at a time, never the whole matrix), threaded over output rows. Official numerics quantise
// the activations 1×128 (FP8) first at the §12 "FP8 linears" and routed experts.
#pragma once

#include <cstdint>

#include "cpu/context.h"
#include "model/quant.h"

namespace dsv4 {

// Which GEMMs quantise their input in official numerics is a property of the layer, not of how
// the weight happens to be stored (§12: wq_a, wq_b, wkv, wo_b, indexer.wq_b, e_proj, h_proj,
// shared and routed experts; NOT wo_a, the router, compressors, weights_proj, hc, head), so a
// BF16 export runs the same numerics as the FP8/FP4 original, and a linear a ModelOpt
// re-quantisation stored as NVFP4 (§11.6) the numerics of the linear it replaces: its weights
// dequantise exactly, its input is not re-quantised to FP4 (input_scale, for W4A4, is unused).
enum class ActQuant { kNone, kFp8 };

// y[n, n_rows] = x[n, W.cols] · W[row0 : row0+n_rows]ᵀ   (x, y FP32, row-major)
void linear_rows(const CpuContext& ctx, const float* x, int64_t n, const WeightMatrix& w,
                 int64_t row0, int64_t n_rows, float* y, ActQuant aq = ActQuant::kNone);
// y[n, W.rows] = x[n, W.cols] · Wᵀ
inline void linear(const CpuContext& ctx, const float* x, int64_t n, const WeightMatrix& w,
                   float* y, ActQuant aq = ActQuant::kNone) {
  linear_rows(ctx, x, n, w, 0, w.rows, y, aq);
}

// In place over n rows of width dim: x ← x / sqrt(mean(x²) + eps) · weight (weight [dim] or
// nullptr for the unweighted norm of §4.1 / §3.1).
void rms_norm_rows(float* x, int64_t n, int64_t dim, const WeightMatrix* weight, double eps);

// Whole small vector (norm weights, biases, sinks, ape) dequantised to FP32.
std::vector<float> load_vector(const WeightMatrix& w);

}  // namespace dsv4
