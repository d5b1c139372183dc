// MTP (§10): e = RMSNorm_enorm(embed[next]); Hs_j = RMSNorm_hnorm(X_j) per stream;
// X^mtp_j = h_proj(Hs_j) + e_proj(e); one decoder block (main rope table, score routing, layer id
// L + block); logits = head · RMSNorm_mtp.norm(HC_head_mtp(X^mtp)). The block's output streams
// (pre-HC_head) are what a recurrent draft feeds back as the next "previous hidden".
#include "cpu/mtp.h"

#include <vector>

#include "cpu/decoder_layer.h"
#include "cpu/head.h"
#include "cpu/linear.h"
#include "util/error.h"

namespace dsv4 {

void mtp_forward(const CpuModel& model, CpuSequenceState& seq, int block, const float* streams,
                 const int32_t* next_tokens, int64_t T, float* logits, float* out_streams,
                 const TraceHook* trace) {
  const ModelConfig& cfg = model.cfg;
  if (block < 0 || size_t(block) >= model.weights.mtp.size())
    fail("MTP block ", block, " is not in the checkpoint (it has ", model.weights.mtp.size(),
         " mtp.* blocks)");
  const MtpWeights& w = model.weights.mtp[size_t(block)];
  const CpuContext ctx = model.context(trace);
  const int64_t n = cfg.hc_mult, D = cfg.hidden_size;
  const int layer = int(cfg.num_hidden_layers) + block;
  const int64_t pos0 = seq.mtp_position();
  if (pos0 + T > seq.max_tokens())
    fail("MTP: sequence would reach ", pos0 + T, " tokens, its limit is ", seq.max_tokens());

  std::vector<float> e(size_t(T * n * D));  // embed broadcast to n streams; stream 0 used
  embed_tokens(ctx, model.weights.embed, next_tokens, T, e.data());
  std::vector<float> e0(size_t(T * D));
  for (int64_t t = 0; t < T; ++t)
    std::copy(e.data() + t * n * D, e.data() + t * n * D + D, e0.data() + t * D);
  // Official-bf16 rounds every op's output here too (the reference MTP block is BF16 tensors).
  rms_norm_rows(e0.data(), T, D, &w.enorm, cfg.rms_norm_eps);
  ctx.bf16(e0.data(), T * D);
  std::vector<float> ep(size_t(T * D));
  linear(ctx, e0.data(), T, w.e_proj, ep.data(), ActQuant::kFp8);
  ctx.bf16(ep.data(), T * D);

  std::vector<float> hs(streams, streams + T * n * D);  // rows = (t, j) streams
  rms_norm_rows(hs.data(), T * n, D, &w.hnorm, cfg.rms_norm_eps);
  ctx.bf16(hs.data(), T * n * D);
  std::vector<float> X(size_t(T * n * D));
  linear(ctx, hs.data(), T * n, w.h_proj, X.data(), ActQuant::kFp8);
  ctx.bf16(X.data(), T * n * D);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t d = 0; d < D; ++d) X[size_t((t * n + j) * D + d)] += ep[size_t(t * D + d)];
  ctx.bf16(X.data(), T * n * D);

  decoder_layer(ctx, w.layer, layer, model.rope_for(w.layer.spec), X.data(), next_tokens, T, pos0,
                seq.mtp[size_t(block)]);
  if (out_streams) std::copy(X.begin(), X.end(), out_streams);
  if (logits) output_head(ctx, w.hc_head, w.norm, model.weights.head, X.data(), T, logits);
  seq.mtp_advance(T);
}

}  // namespace dsv4
