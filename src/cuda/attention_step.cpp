// The attention sub-layer on the GPU (§4–§7) for the T tokens of a pass, in the reference's
// order: query and K=V paths, window rows into the FP8 cache ring, the indexer (CSA: its own
// compressor, FP4 keys, scores, top-k), the main compressor's entries into the cache, sparse sink
// attention with inverse RoPE, grouped output projection. Positions are read on the device only.
#include <cmath>

#include "cuda/kernels/attention_indices.cuh"
#include "cuda/kernels/cache_slots.cuh"
#include "cuda/kernels/compressor.cuh"
#include "cuda/kernels/grouped_out_proj.cuh"
#include "cuda/kernels/hadamard_fp4.cuh"
#include "cuda/kernels/indexer.cuh"
#include "cuda/kernels/kv_cache.cuh"
#include "cuda/kernels/rope.cuh"
#include "cuda/kernels/sparse_attention.cuh"
#include "cuda/step.h"

namespace dsv4::cuda {

namespace {

void rope(const StepContext& c, __nv_bfloat16* x, const float* inv_freq, int heads, int head_dim) {
  RopeApplyParams p;
  p.x = x;
  p.pos = c.s.pos;
  p.inv_freq = inv_freq;
  p.n_rows = c.T;
  p.n_heads = heads;
  p.head_dim = head_dim;
  p.rope_dim = int(c.m.cfg.qk_rope_head_dim);
  p.row_stride = int64_t(heads) * head_dim;
  launch_rope(p, c.stream);
}

// §5: a = x·wkvᵀ, z = x·wgateᵀ in FP32, then the streaming pool/norm/RoPE into s.entry rows with
// s.entry_idx naming the entry each token emits (−1: none).
void run_compressor(const StepContext& c, const DeviceCompressor& w, const float* inv_freq,
                    float* ring_a, float* ring_z) {
  linear_f32(c, w.wkv, c.s.u, c.T, c.s.ca);
  linear_f32(c, w.wgate, c.s.u, c.T, c.s.cz);
  CompressorParams p;
  p.a = c.s.ca;
  p.z = c.s.cz;
  p.ape = w.ape.get();
  p.norm = w.norm.get();
  p.inv_freq = inv_freq;
  p.pos = c.s.pos;
  p.ring_a = ring_a;
  p.ring_z = ring_z;
  p.entry = c.s.entry;
  p.entry_idx = c.s.entry_idx;
  p.T = c.T;
  p.m = w.ratio;
  p.c = w.width;
  p.coff = w.coff;
  p.rope_dim = int(c.m.cfg.qk_rope_head_dim);
  p.eps = float(c.m.cfg.rms_norm_eps);
  launch_compressor(p, c.stream);
}

void pack_kv(const StepContext& c, const __nv_bfloat16* rows, const int32_t* slots, LayerState& st) {
  KvPackParams p;
  p.kv = rows;
  p.slot = slots;
  p.cache = st.cache.get();
  p.n_tokens = c.T;
  p.block_size = kKvBlockSize;
  p.dim = int(c.m.cfg.head_dim);
  launch_kv_pack(p, c.stream);
}

// §6: the indexer's keys advance with its compressor; the chunk's queries score the visible keys.
void indexer(const StepContext& c, const DeviceLayer& w, int layer, LayerState& st,
             const QuantAct& qr_q, const float* inv_freq) {
  const ModelConfig& cfg = c.m.cfg;
  const int Hi = int(cfg.index_n_heads);
  run_compressor(c, *w.idx_compressor, inv_freq, st.idx_ring_a.get(), st.idx_ring_z.get());
  HadamardFp4Params hk;  // keys: rotate + FP4, scattered to their entry rows
  hk.x = c.s.entry;
  hk.packed = st.idx_keys.get();
  hk.scale = st.idx_key_scale.get();
  hk.row_dst = c.s.entry_idx;
  hk.n_rows = c.T;
  launch_hadamard_fp4(hk, c.stream);
  if (c.tracing()) {  // the CPU traces keys rotated and FP4-rounded: the same basis, as BF16
    HadamardFp4Params ht;
    ht.x = c.s.entry;
    ht.fq = c.s.qi_fq;
    ht.n_rows = c.T;
    launch_hadamard_fp4(ht, c.stream);
    c.emit_entries("indexer.keys", layer, c.s.qi_fq, kIndexerDim);
  }

  linear_q(c, w.idx_wq_b, qr_q, c.T, c.s.qi);
  rope(c, c.s.qi, inv_freq, Hi, kIndexerDim);
  HadamardFp4Params hq;  // queries: the same rotation and FP4 grid, kept as BF16 values
  hq.x = c.s.qi;
  hq.fq = c.s.qi_fq;
  hq.n_rows = c.T * Hi;
  launch_hadamard_fp4(hq, c.stream);
  linear_f32(c, w.idx_weights_proj, c.s.u, c.T, c.s.hw);

  IndexerTopkParams p;
  p.q = c.s.qi_fq;
  p.head_weight = c.s.hw;
  p.key_packed = st.idx_keys.get();
  p.key_scale = st.idx_key_scale.get();
  p.pos = c.s.pos;
  p.score = c.seq.index_score.get();
  p.topk = c.s.topk;
  p.n_q = c.T;
  p.Hi = Hi;
  p.K = int(cfg.index_topk);
  p.ratio = w.idx_compressor->ratio;
  p.max_entries = st.max_entries;
  launch_indexer_topk(p, c.stream);
  c.emit_i32("indexer.topk", layer, c.s.topk, {c.T, int64_t(cfg.index_topk)});
}

}  // namespace

void attention_step(const StepContext& c, const DeviceLayer& w, int layer, LayerState& st) {
  const ModelConfig& cfg = c.m.cfg;
  const int T = c.T, D = int(cfg.hidden_size), Q = int(cfg.q_lora_rank);
  const int H = int(cfg.num_attention_heads), d = int(cfg.head_dim);
  const float* inv_freq = c.m.inv_freq(w.spec);
  Scratch& s = c.s;

  // §4.1 / §4.2: qr = q_norm(x·wq_aᵀ), q = per-head RMSNorm(qr·wq_bᵀ) + RoPE; kv likewise.
  const QuantAct xq = quantize(c, s.u, D, s.aq, s.aqs, s.fake);
  linear_q(c, w.wq_a, xq, T, s.qr);
  linear_q(c, w.wkv, xq, T, s.kv);
  rmsnorm(c, s.qr, w.q_norm.get(), T, Q);
  const QuantAct qrq = quantize(c, s.qr, Q, s.aq, s.aqs, s.fake);
  linear_q(c, w.wq_b, qrq, T, s.q);
  rmsnorm(c, s.q, nullptr, T * H, d);
  rope(c, s.q, inv_freq, H, d);
  c.emit_bf16("attn.q", layer, s.q, {T, H, d});
  rmsnorm(c, s.kv, w.kv_norm.get(), T, d);
  rope(c, s.kv, inv_freq, 1, d);
  c.emit_bf16("attn.kv", layer, s.kv, {T, d});

  // Window rows: slot = position mod ring (ring = W + kMaxChunk, see LayerState).
  launch_cache_slots({s.pos, s.slots, T, 0, st.ring}, c.stream);
  pack_kv(c, s.kv, s.slots, st);

  // §7 order: the indexer (its compressor, then scores) before the main compressor.
  if (w.spec.attention == AttentionType::kCSA) indexer(c, w, layer, st, qrq, inv_freq);
  if (w.compressor) {
    run_compressor(c, *w.compressor, inv_freq, st.comp_ring_a.get(), st.comp_ring_z.get());
    launch_cache_slots({s.entry_idx, s.entry_slots, T, st.ring, 0}, c.stream);
    pack_kv(c, s.entry, s.entry_slots, st);
    c.emit_entries(w.spec.attention == AttentionType::kCSA ? "csa.entries" : "hca.entries", layer,
                   s.entry, d);
  }

  AttnIndexParams ip;
  ip.pos = s.pos;
  ip.topk = w.spec.attention == AttentionType::kCSA ? s.topk : nullptr;
  ip.indices = c.seq.attn_indices.get();
  ip.n_q = T;
  ip.window = int(cfg.sliding_window);
  ip.ring = st.ring;
  ip.comp_base = st.ring;
  ip.ratio = w.spec.compress_ratio;
  ip.topk_k = int(cfg.index_topk);
  ip.n_idx = st.n_idx;
  launch_attention_indices(ip, c.stream);

  SparseAttnParams ap;
  ap.q = s.q;
  ap.cache = st.cache.get();
  ap.indices = c.seq.attn_indices.get();
  ap.sink = w.attn_sink.get();
  ap.pos = s.pos;
  ap.inv_freq = inv_freq;
  ap.out = s.o;
  ap.n_q = T;
  ap.H = H;
  ap.n_idx = st.n_idx;
  ap.block_size = kKvBlockSize;
  ap.dim = d;
  ap.softmax_scale = float(1.0 / std::sqrt(double(d)));  // §4.3
  launch_sparse_attention(ap, c.stream);
  c.emit_bf16("attn.core", layer, s.o, {T, H, d});

  // §4.5: z_g = wo_a_g · o_g per group (BF16 einsum in the reference), then y = z·wo_bᵀ.
  GroupedOutProjParams gp;
  gp.o = s.o;
  if (w.wo_a.fp8) {
    gp.w_fp8 = w.wo_a.data.get();
    gp.w_scale = w.wo_a.scale.get();
  } else {
    gp.w_bf16 = w.wo_a.bf16();
  }
  gp.z = s.zg;
  gp.T = T;
  gp.G = int(cfg.o_groups);
  gp.R = int(cfg.o_lora_rank);
  gp.K = int(cfg.heads_per_group() * d);
  launch_grouped_out_proj(gp, c.stream);
  const QuantAct zq = quantize(c, s.zg, gp.G * gp.R, s.aq, s.aqs, s.fake);
  linear_q(c, w.wo_b, zq, T, s.attn_out);
  c.emit_bf16("attn.out", layer, s.attn_out, {T, D});
}

}  // namespace dsv4::cuda
