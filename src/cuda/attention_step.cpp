// The attention sub-layer on the GPU (§4–§7) for the T rows of a pass (chunks of several
// sequences), in the reference's order: query and K=V paths, window rows into the pass's own pool
// rows, the indexer (CSA: its own compressor, paged FP4 keys, scores, top-k), the main
// compressor's entries into their paged rows, sparse sink attention with inverse RoPE, the window
// rows into each sequence's ring, grouped output projection. Positions are read on the device,
// except that a long prompt chunk's first position (the plan's host copy) sizes its key gather.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/kernels/attention_indices.cuh"
#include "cuda/kernels/cache_slots.cuh"
#include "cuda/kernels/compressor.cuh"
#include "cuda/kernels/grouped_out_proj.cuh"
#include "cuda/kernels/hadamard_fp4.cuh"
#include "cuda/kernels/indexer.cuh"
#include "cuda/kernels/kv_cache.cuh"
#include "cuda/kernels/kv_gather.cuh"
#include "cuda/kernels/sparse_attention.cuh"
#include "cuda/matmul.h"
#include "cuda/step.h"

namespace dsv4::cuda {

namespace {

// §5: a = x·wkvᵀ, z = x·wgateᵀ in FP32, then the streaming pool/norm/RoPE into o.entry rows with
// o.entry_idx naming the entry each row emits (−1: none); state in the slots' rings.
void run_compressor(const StepContext& c, const DeviceCompressor& w, const float* inv_freq,
                    float* ring_a, float* ring_z, const CompressorScratch& o) {
  linear_f32(c, w.wkv, c.s.u, c.T, o.a);
  linear_f32(c, w.wgate, c.s.u, c.T, o.z);
  CompressorParams p;
  p.a = o.a;
  p.z = o.z;
  p.ape = w.ape.get();
  p.norm = w.norm.get();
  p.inv_freq = inv_freq;
  p.rows = c.rows;
  p.ring_a = ring_a;
  p.ring_z = ring_z;
  p.entry = o.entry;
  p.entry_idx = o.entry_idx;
  p.T = c.T;
  p.m = w.ratio;
  p.c = w.width;
  p.coff = w.coff;
  p.ring_rows = int(compressor_ring_rows(w.ratio));  // model/rollback.h: the rollback margin
  p.rope_dim = int(c.m.cfg.qk_rope_head_dim);
  p.eps = float(c.m.cfg.rms_norm_eps);
  launch_compressor(p, c.stream);
}

// Rows of `rows` [T, d] into the layer's pool at `slots` (−1: skipped).
void pack_kv(const StepContext& c, const __nv_bfloat16* rows, const int32_t* slots, const LayerPool& pool) {
  KvPackParams p;
  p.kv = rows;
  p.slot = slots;
  p.cache = pool.cache;
  p.n_tokens = c.T;
  p.block_size = kKvBlockSize;
  p.dim = int(c.m.cfg.head_dim);
  launch_kv_pack(p, c.stream);
}

// o.entry_slots: the pool rows (or key rows, base 0) of the entries this pass emitted (o.entry_idx).
void entry_slots(const StepContext& c, const CompressorScratch& o, int base, int per_block) {
  EntrySlotParams p;
  p.rows = c.rows;
  p.pages = c.kv.pages();
  p.entry_idx = o.entry_idx;
  p.out = o.entry_slots;
  p.n = c.T;
  p.base = base;
  p.per_block = per_block;
  launch_entry_slots(p, c.stream);
}

// §6: the indexer's keys advance with its compressor (written to the paged key pool before any
// query scores them); the queries are rotated and FP4-rounded for every row of the pass.
void indexer_keys_and_queries(const StepContext& c, const DeviceLayer& w, int layer,
                              const LayerPool& pool, const QuantAct& qr_q, const float* inv_freq) {
  const int Hi = int(c.m.cfg.index_n_heads);
  const CompressorScratch& o = c.s.idx_comp;
  run_compressor(c, *w.idx_compressor, inv_freq, pool.idx_ring_a, pool.idx_ring_z, o);
  entry_slots(c, o, 0, kIndexerKeysPerBlock);
  HadamardFp4Params hk;  // keys: rotate + FP4, scattered to their paged rows
  hk.x = o.entry;
  hk.packed = pool.idx_keys;
  hk.scale = pool.idx_key_scale;
  hk.row_dst = o.entry_slots;
  hk.n_rows = c.T;
  launch_hadamard_fp4(hk, c.stream);
  if (c.tracing()) {  // the CPU traces keys rotated and FP4-rounded: the same basis, as BF16
    HadamardFp4Params ht;
    ht.x = o.entry;
    ht.fq = c.s.qi_fq;
    ht.n_rows = c.T;
    launch_hadamard_fp4(ht, c.stream);
    c.emit_entries("indexer.keys", layer, c.s.qi_fq, o.entry_idx, kIndexerDim);
  }

  linear_q(c, w.idx_wq_b, qr_q, c.T, c.s.qi);
  HadamardFp4Params hq;  // queries: RoPE, then the same rotation and FP4 grid, kept as BF16 values
  hq.x = c.s.qi;
  hq.fq = c.s.qi_fq;
  hq.n_rows = c.T * Hi;
  hq.pos = c.rows.pos;
  hq.inv_freq = inv_freq;
  hq.rope_dim = int(c.m.cfg.qk_rope_head_dim);
  hq.rows_per_pos = Hi;
  launch_hadamard_fp4(hq, c.stream);
  linear_f32(c, w.idx_weights_proj, c.s.u, c.T, c.s.hw);
}

// §5 for the layer's main compressor: its entries into their pool rows.
void main_compressor(const StepContext& c, const DeviceLayer& w, int layer, const LayerPool& pool,
                     const float* inv_freq) {
  const CompressorScratch& o = c.s.comp;
  run_compressor(c, *w.compressor, inv_freq, pool.comp_ring_a, pool.comp_ring_z, o);
  entry_slots(c, o, pool.comp_base, pool.per_block);
  pack_kv(c, o.entry, o.entry_slots, pool);
  const bool csa = w.spec.attention == AttentionType::kCSA;
  c.emit_entries(csa ? "csa.entries" : "hca.entries", layer, o.entry, o.entry_idx, int(c.m.cfg.head_dim));
}

// §6 steps 5–6 for rows [g0, g0+n) into s.topk [n, K]; a prefill run's rows (one chunk) score on
// the tensor cores.
void indexer_select(const StepContext& c, const DeviceLayer& w, const LayerPool& pool, int g0, int n, bool prefill) {
  const ModelConfig& cfg = c.m.cfg;
  const int Hi = int(cfg.index_n_heads);
  IndexerTopkParams p;
  p.q = c.s.qi_fq + size_t(g0) * Hi * kIndexerDim;
  p.head_weight = c.s.hw + size_t(g0) * Hi;
  p.key_packed = pool.idx_keys;
  p.key_scale = pool.idx_key_scale;
  p.pos = c.rows.pos + g0;
  p.slot = c.rows.slot + g0;
  p.pages = c.kv.pages();
  p.score = c.s.index_score;
  p.topk = c.s.topk;
  p.n_q = n;
  p.Hi = Hi;
  p.K = int(cfg.index_topk);
  p.ratio = w.idx_compressor->ratio;
  p.max_entries = pool.max_entries;
  p.prefill = prefill;
  launch_indexer_topk(p, c.stream);
}

// A prefill run (one long chunk) reads its window rows and its sequence's compressed entries as
// BF16 key rows (kv_gather.cuh) in s.chunk_keys; returns the row of entry 0 (attention_indices'
// entry_row0). The counts come from the plan's host copy of the chunk's first position.
int gather_chunk_keys(const StepContext& c, const DeviceLayer& w, const LayerPool& pool, const RowRun& run) {
  const int W = int(c.m.cfg.sliding_window), ratio = w.spec.compress_ratio;
  const int pos0 = c.plan.position(run.first);
  KvGatherParams p;
  p.cache = pool.cache;
  p.block_size = kKvBlockSize;
  p.dim = int(c.m.cfg.head_dim);
  p.rows = c.rows;
  p.first = run.first;
  p.n_window = pos0 + run.n - chunk_window_base(pos0, W);
  p.window = W;
  p.pass_base = pool.pass_base;
  p.ring_base = pool.ring_base;
  p.ring_rows = pool.ring_rows;
  p.pages = c.kv.pages();
  p.comp_base = pool.comp_base;
  p.per_block = pool.per_block;
  p.n_entries = ratio > 0 ? std::min((pos0 + run.n) / ratio, pool.max_entries) : 0;  // §7: j < (t+1)/ratio
  p.entry_row0 = p.n_window;
  p.out = c.s.chunk_keys;
  DSV4_CHECK_MSG(c.s.chunk_keys && p.n_window + p.n_entries <= c.s.chunk_key_rows, "attention: a chunk of ", run.n,
                 " rows at position ", pos0, " needs ", p.n_window + p.n_entries, " key rows, the scratch holds ",
                 c.s.chunk_key_rows);
  launch_kv_gather(p, c.stream);
  return p.entry_row0;
}

// Sparse attention of pass rows [g0, g0 + n) over the lists in s.attn_indices: the prefill
// kernel on the chunk's BF16 key rows, or the decode kernel on the FP8 cache.
void attend(const StepContext& c, const DeviceLayer& w, const LayerPool& pool, int g0, int n, bool prefill) {
  const int H = c.m.heads(), d = int(c.m.cfg.head_dim);
  SparseAttnParams ap;
  ap.q = c.s.q + size_t(g0) * H * d;
  ap.cache = pool.cache;
  ap.keys = prefill ? c.s.chunk_keys : nullptr;
  ap.indices = c.s.attn_indices;
  ap.count = c.s.attn_count;
  ap.sink = w.attn_sink.get();
  ap.pos = c.rows.pos + g0;
  ap.inv_freq = c.m.inv_freq(w.spec);
  ap.out = c.s.o + size_t(g0) * H * d;
  ap.n_q = n;
  ap.H = H;
  ap.n_idx = pool.n_idx;
  ap.block_size = kKvBlockSize;
  ap.dim = d;
  ap.softmax_scale = float(1.0 / std::sqrt(double(d)));  // §4.3
  launch_sparse_attention(ap, c.stream);
}

}  // namespace

void attention_step(const StepContext& c, const DeviceLayer& w, int layer) {
  const ModelConfig& cfg = c.m.cfg;
  const int T = c.T, D = int(cfg.hidden_size), Q = int(cfg.q_lora_rank);
  // This rank's query heads (all of them unless attention is tensor-parallel: DeviceModel::tp).
  const int H = c.m.heads(), d = int(cfg.head_dim), W = int(cfg.sliding_window);
  const float* inv_freq = c.m.inv_freq(w.spec);
  const LayerPool& pool = c.kv.layers[size_t(layer)];
  const bool csa = w.spec.attention == AttentionType::kCSA;
  Scratch& s = c.s;

  // §4.1 / §4.2: qr = q_norm(x·wq_aᵀ), q = per-head RMSNorm(qr·wq_bᵀ) + RoPE; kv likewise. wkv
  // and wq_a read the same activations, in one launch where they can (linear_q_pair), before
  // qr's quantisation overwrites s.aq. The rest of the kv path (its norm, RoPE, window slots and
  // pool rows) then runs on the pass's branch beside the q path and the indexer (step.h:
  // fork_branch), and so does the main compressor (§5), which reads only u, where the branch may
  // hold linears: neither side reads what the other writes, and the attention after the join
  // reads both.
  const QuantAct xq = block_input(c);  // s.u, normalised and quantised by HC_pre (layer_pass.cpp)
  linear_q_pair(c, w.wkv, s.kv, w.wq_a, s.qr, xq, T);
  const StepContext kv = fork_branch(c);
  const QuantAct qrq = rmsnorm_quantize(c, s.qr, w.q_norm.get(), T, Q);
  linear_q(c, w.wq_b, qrq, T, s.q);
  rmsnorm_rope(c, s.q, nullptr, H, d, inv_freq);
  c.emit_bf16("attn.q", layer, s.q, {T, H, d});
  rmsnorm_rope(kv, s.kv, w.kv_norm.get(), 1, d, inv_freq);
  kv.emit_bf16("attn.kv", layer, s.kv, {T, d});

  // Window rows: this pass's own rows now (its queries read them there), the rings after attention.
  WindowSlotParams ws;
  ws.rows = c.rows;
  ws.pass_slot = s.pass_slot;
  ws.ring_slot = s.ring_slot;
  ws.n = T;
  ws.pass_base = pool.pass_base;
  ws.ring_base = pool.ring_base;
  ws.ring_rows = pool.ring_rows;
  launch_window_slots(ws, kv.stream);
  pack_kv(kv, s.kv, s.pass_slot, pool);
  const bool compressor_on_branch = w.compressor && branch_linears(c);
  if (compressor_on_branch) main_compressor(kv, w, layer, pool, inv_freq);
  end_branch(kv);

  // §7 order: the indexer (its compressor, then scores) before the main compressor. The two share
  // no state or buffer, so the order matters only to a trace.
  if (csa) indexer_keys_and_queries(c, w, layer, pool, qrq, inv_freq);
  join_branch(c);
  if (w.compressor && !compressor_on_branch) main_compressor(c, w, layer, pool, inv_freq);

  // Indexer picks, row lists and sparse attention, kAttentionGroupRows queries at a time, by row
  // class (row_runs.h): a long prompt chunk's indexer scores run on the tensor cores and, with
  // CudaOptions::prefill_attention, its key rows are expanded to BF16 once and its queries run the
  // prefill attention kernel; every other row (decode rows, drafts, short chunks) the scalar
  // scores and the decode kernel on the FP8 cache.
  std::vector<int32_t> traced_topk;
  for (const RowRun& run : row_runs(c.segments, c.T, [](int) { return true; })) {
    const bool prefill_kernel = run.prefill && c.m.prefill_attention;  // CudaOptions::prefill_attention
    const int entry_row0 = prefill_kernel ? gather_chunk_keys(c, w, pool, run) : -1;
    for (int g0 = run.first; g0 < run.first + run.n; g0 += kAttentionGroupRows) {
      const int n = std::min(kAttentionGroupRows, run.first + run.n - g0);
      if (csa) {
        indexer_select(c, w, pool, g0, n, run.prefill);
        if (c.tracing()) {
          std::vector<int32_t> h(size_t(n) * cfg.index_topk);
          DSV4_CUDA_CHECK(cudaStreamSynchronize(c.stream));
          DSV4_CUDA_CHECK(cudaMemcpy(h.data(), s.topk, h.size() * 4, cudaMemcpyDeviceToHost));
          traced_topk.insert(traced_topk.end(), h.begin(), h.end());
        }
      }
      AttnIndexParams ip;
      ip.rows = c.rows;
      ip.row0 = g0;
      ip.pages = c.kv.pages();
      ip.topk = csa ? s.topk : nullptr;
      ip.indices = s.attn_indices;
      ip.count = s.attn_count;
      ip.n_q = n;
      ip.window = W;
      ip.ring_rows = pool.ring_rows;
      ip.pass_base = pool.pass_base;
      ip.ring_base = pool.ring_base;
      ip.comp_base = pool.comp_base;
      ip.per_block = pool.per_block;
      ip.ratio = w.spec.compress_ratio;
      ip.topk_k = int(cfg.index_topk);
      ip.n_idx = pool.n_idx;
      ip.entry_row0 = entry_row0;
      launch_attention_indices(ip, c.stream);
      attend(c, w, pool, g0, n, prefill_kernel);
    }
  }
  if (csa && c.tracing()) {
    const std::vector<float> f(traced_topk.begin(), traced_topk.end());
    const int64_t shape[2] = {T, cfg.index_topk};
    (*c.trace)("indexer.topk", layer, f.data(), shape);
  }
  c.emit_bf16("attn.core", layer, s.o, {T, H, d});
  pack_kv(c, s.kv, s.ring_slot, pool);  // §5.5: the window ring for this sequence's next pass

  // §4.5: z_g = wo_a_g · o_g per group (BF16 einsum in the reference), then y = z·wo_bᵀ. By
  // row class: a long prompt chunk's rows through cuBLASLt, every other row the skinny kernel
  // (matmul.cpp rule 3).
  const int G = c.m.groups(), R = int(cfg.o_lora_rank), Kg = int(cfg.heads_per_group() * d);
  for (const RowRun& run : row_runs(c.segments, c.T, [](int) { return true; })) {
    GroupedOutProjParams gp;
    gp.o = s.o + size_t(run.first) * G * Kg;
    if (w.wo_a.fp8) {
      gp.w_fp8 = w.wo_a.data.get();
      gp.w_scale = w.wo_a.scale.get();
    } else {
      gp.w_bf16 = w.wo_a.bf16();
    }
    gp.z = s.zg + size_t(run.first) * G * R;
    gp.T = run.n;
    gp.G = G;
    gp.R = R;
    gp.K = Kg;
    if (!run.prefill || !grouped_out_proj_lt(gp, s.wo_a_group, c.stream)) launch_grouped_out_proj(gp, c.stream);
  }
  const QuantAct zq = quantize(c, s.zg, G * R, s.aq, s.aqs, s.fake);
  if (s.attn_partial) {  // tensor parallelism: the ranks add these in FP32 (layer_pass.cpp)
    linear_q_f32(c, w.wo_b, zq, T, s.attn_partial);
    return;
  }
  linear_q(c, w.wo_b, zq, T, s.attn_out);
  c.emit_bf16("attn.out", layer, s.attn_out, {T, D});
}

}  // namespace dsv4::cuda
