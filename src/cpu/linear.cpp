// linear_rows: parallel over tiles of output rows; each task expands its tile with
// WeightMatrix::dequant_rows into a thread-local buffer and takes dot products with every token
// (tile_rows_dot, whose arithmetic is the contract: cpu/tile_dot.h). FP4 and FP8 tiles go to
// fp4_rows_dot / fp8_rows_dot instead, which decode in registers with the same arithmetic
// (cpu/fp4_linear.h, cpu/fp8_linear.h).
#include "cpu/linear.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/fp4_linear.h"
#include "cpu/fp8_linear.h"
#include "cpu/tile_dot.h"
#include "util/error.h"

namespace dsv4 {

namespace {

constexpr int64_t kTileRows = 16;  // rows expanded per task: 16 × cols FP32 stays in L2

}  // namespace

void linear_rows(const CpuContext& ctx, const float* x, int64_t n, const WeightMatrix& w,
                 int64_t row0, int64_t n_rows, float* y, ActQuant aq) {
  DSV4_CHECK_MSG(w.present(), w.name);
  DSV4_CHECK(row0 >= 0 && row0 + n_rows <= w.rows);
  const int64_t K = w.cols;
  std::vector<float> xq;
  if (aq == ActQuant::kFp8 && ctx.numerics.act_fp8) {
    // §12: per token, per 128 columns, E4M3 with a power-of-two scale (the reference act_quant).
    xq.assign(x, x + n * K);
    for (int64_t t = 0; t < n; ++t) fp8_roundtrip_blocks(xq.data() + t * K, K, kActBlockSize);
    x = xq.data();
  }
  const bool fused_fp4 =
      (w.format == WeightFormat::kMXFP4 || w.format == WeightFormat::kNVFP4) && fp4_fused_available();
  const bool fused_fp8 = w.format == WeightFormat::kFP8Block && K % 16 == 0 && fp8_fused_available();
  const int64_t n_tiles = (n_rows + kTileRows - 1) / kTileRows;
  ctx.pool.parallel_for(n_tiles, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> tile;
    if (!fused_fp4 && !fused_fp8) tile.resize(size_t(kTileRows * K));
    for (int64_t ti = b; ti < e; ++ti) {
      const int64_t r = ti * kTileRows, nr = std::min(kTileRows, n_rows - r);
      if (fused_fp4) {
        fp4_rows_dot(w, row0 + r, nr, x, n, y + r, n_rows);
        continue;
      }
      if (fused_fp8) {
        fp8_rows_dot(w, row0 + r, nr, x, n, y + r, n_rows);
        continue;
      }
      w.dequant_rows(row0 + r, nr, tile.data());
      tile_rows_dot(tile.data(), nr, x, n, K, y + r, n_rows);
    }
  });
}

void rms_norm_rows(float* x, int64_t n, int64_t dim, const WeightMatrix* weight, double eps) {
  std::vector<float> wv;
  if (weight) {
    DSV4_CHECK_MSG(weight->rows * weight->cols == dim, weight->name);
    wv = load_vector(*weight);
  }
  for (int64_t t = 0; t < n; ++t) {
    float* v = x + t * dim;
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += double(v[i]) * double(v[i]);
    const float inv = float(1.0 / std::sqrt(ss / double(dim) + eps));
    for (int64_t i = 0; i < dim; ++i) v[i] = weight ? wv[i] * (v[i] * inv) : v[i] * inv;
  }
}

std::vector<float> load_vector(const WeightMatrix& w) {
  DSV4_CHECK_MSG(w.present(), w.name);
  std::vector<float> v(size_t(w.rows * w.cols));
  w.dequant_rows(0, w.rows, v.data());
  return v;
}

}  // namespace dsv4
