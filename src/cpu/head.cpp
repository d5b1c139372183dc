// Embedding and output head. lm_head is an ordinary linear from its stored format (BF16 in the
// official checkpoint, so no activation quantisation in official mode either).
#include "cpu/head.h"

#include <vector>

#include "cpu/linear.h"
#include "cpu/mhc.h"
#include "util/error.h"

namespace dsv4 {

void embed_tokens(const CpuContext& ctx, const WeightMatrix& embed, const int32_t* tokens,
                  int64_t T, float* X) {
  const int64_t n = ctx.cfg.hc_mult, D = ctx.cfg.hidden_size;
  for (int64_t t = 0; t < T; ++t) {
    if (tokens[t] < 0 || tokens[t] >= embed.rows)
      fail("token ", t, " of the chunk: id ", tokens[t], " is outside the vocabulary [0, ",
           embed.rows, ")");
    float* xt = X + t * n * D;
    embed.dequant_rows(tokens[t], 1, xt);
    ctx.bf16(xt, D);  // a no-op for the official BF16 table; rounds an F32 export's rows
    for (int64_t j = 1; j < n; ++j) std::copy(xt, xt + D, xt + j * D);
  }
}

void output_head(const CpuContext& ctx, const HyperConnWeights& hc, const WeightMatrix& norm,
                 const WeightMatrix& head, const float* X, int64_t T, float* logits) {
  const int64_t D = ctx.cfg.hidden_size;
  std::vector<float> h(size_t(T * D));
  hc_head(ctx, hc, X, T, h.data());
  ctx.bf16(h.data(), T * D);
  rms_norm_rows(h.data(), T, D, &norm, ctx.cfg.rms_norm_eps);
  ctx.bf16(h.data(), T * D);  // the head input; the logits stay FP32
  ctx.emit("final.hidden", -1, h.data(), {T, D});
  linear(ctx, h.data(), T, head, logits);
}

}  // namespace dsv4
