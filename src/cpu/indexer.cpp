// Indexer (§6). q_I = qr·wq_bᵀ [Hi, di], RoPE at t on the last r dims; head weights
// w_h = (x·weights_projᵀ)_h · di^−½ · Hi^−½; S_{t,j} = Σ_h w_h·ReLU(q_h·k_j) over the visible
// keys j < floor((t+1)/4); keep the top min(K_top, visible). Official numerics rotate q and keys
// with a normalised Hadamard and round them to FP4 (the dot product is rotation-invariant).
#include "cpu/indexer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "cpu/linear.h"
#include "cpu/serial_dots.h"
#include "util/error.h"

namespace dsv4 {

void hadamard_normalised(float* x, int64_t n) {
  DSV4_CHECK(n > 0 && (n & (n - 1)) == 0);
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  const float s = float(1.0 / std::sqrt(double(n)));
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void indexer_fake_quant(const CpuContext& ctx, float* v, int64_t di) {
  hadamard_normalised(v, di);
  ctx.bf16(v, di);  // official-bf16: the rotation (FP32 inside) returns BF16, then the FP4 cast
  fp4_roundtrip_blocks(v, di, kIndexerQuantBlock);
}

void indexer_select(const CpuContext& ctx, const IndexerWeights& w, const RopeTable& rope,
                    const float* x, const float* qr, int64_t T, int64_t pos0,
                    CompressorState& keys, int layer, std::vector<int32_t>* topk) {
  const ModelConfig& cfg = ctx.cfg;
  const int64_t Hi = cfg.index_n_heads, di = cfg.index_head_dim, K = cfg.index_topk;
  const int64_t m = w.compressor.ratio;

  // Keys first (reference order, §7): windows completed inside this chunk become visible to the
  // chunk's later queries only, through the visibility rule below.
  const int64_t first_new = compressor_step(ctx, w.compressor, rope, x, T, pos0, keys);
  if (ctx.numerics.indexer_fp4)
    for (int64_t j = first_new; j < keys.n_entries; ++j)
      indexer_fake_quant(ctx, keys.entries.data() + j * di, di);
  if (keys.n_entries > first_new)
    ctx.emit("indexer.keys", layer, keys.entries.data() + first_new * di,
             {keys.n_entries - first_new, di});

  std::vector<float> q(size_t(T * Hi * di));
  linear(ctx, qr, T, w.wq_b, q.data(), ActQuant::kFp8);
  ctx.bf16(q.data(), T * Hi * di);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < Hi; ++h) {
      float* qh = q.data() + (t * Hi + h) * di;
      apply_rope(rope, qh, di, pos0 + t);
      ctx.bf16(qh, di);
      if (ctx.numerics.indexer_fp4) indexer_fake_quant(ctx, qh, di);
    }
  std::vector<float> hw(size_t(T * Hi));
  linear(ctx, x, T, w.weights_proj, hw.data());
  const float w_scale = float(1.0 / std::sqrt(double(di)) / std::sqrt(double(Hi)));

  topk->assign(size_t(T * K), -1);
  ctx.pool.parallel_for(T, [&](int64_t b, int64_t e) {
    std::vector<float> score;
    std::vector<int32_t> order;
    for (int64_t t = b; t < e; ++t) {
      const int64_t n_vis = visible_entries(pos0 + t, m);
      DSV4_CHECK(n_vis <= keys.n_entries);
      score.assign(size_t(n_vis), 0.0f);
      // score_j = Σ_h ReLU(q_h · k_j) · w_h, in head order per entry; a few entries at a time.
      constexpr int64_t kEntries = 8;
      for (int64_t j0 = 0; j0 < n_vis; j0 += kEntries) {
        const int64_t nj = std::min(kEntries, n_vis - j0);
        const float* k[kEntries];
        for (int64_t l = 0; l < nj; ++l) k[l] = keys.entries.data() + (j0 + l) * di;
        for (int64_t h = 0; h < Hi; ++h) {
          float d[kEntries];
          serial_dots(q.data() + (t * Hi + h) * di, k, nj, di, d);
          for (int64_t l = 0; l < nj; ++l)
            score[size_t(j0 + l)] += std::max(d[l], 0.0f) * (hw[size_t(t * Hi + h)] * w_scale);
        }
      }
      const int64_t n_sel = std::min(K, n_vis);
      order.resize(size_t(n_vis));
      std::iota(order.begin(), order.end(), 0);
      // Largest score first; ties to the lower index (deterministic; §17.12: unspecified).
      std::partial_sort(order.begin(), order.begin() + n_sel, order.end(),
                        [&](int32_t i, int32_t j) {
                          return score[size_t(i)] > score[size_t(j)] ||
                                 (score[size_t(i)] == score[size_t(j)] && i < j);
                        });
      std::sort(order.begin(), order.begin() + n_sel);
      for (int64_t i = 0; i < n_sel; ++i) (*topk)[size_t(t * K + i)] = order[size_t(i)];
    }
  });
  if (ctx.trace && *ctx.trace) {
    std::vector<float> f(topk->begin(), topk->end());
    ctx.emit("indexer.topk", layer, f.data(), {T, K});
  }
}

}  // namespace dsv4
