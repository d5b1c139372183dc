// What one forward pass on the GPU works with: the device model, the KV pool (kv_pool.h), the
// step plan (step_plan.h: rows of several sequences), the pass's scratch buffers and the stream.
// The sub-layers are attention_step.cpp and moe_step.cpp, the layer loop layer_pass.cpp, the
// runtime around it (sequences, passes, graphs) cuda_forward.cpp. Every function here only
// enqueues work (no host sync unless tracing), so the same code runs eagerly and under capture.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cuda/device_arena.h"
#include "cuda/device_model.h"
#include "cuda/kv_pool.h"
#include "cuda/moe_step.h"
#include "cuda/row_runs.h"
#include "cuda/step_plan.h"
#include "model/forward.h"

namespace dsv4::cuda {

constexpr int kKvBlockSize = 64;   // cache rows per page (FlashMLA's page size; kv_cache.cuh)
// Query rows per indexer / attention launch inside a pass: bounds the per-query scratch (indexer
// scores over every visible CSA entry, attention row lists), which grows with the context.
constexpr int kAttentionGroupRows = 128;
// Rows the skinny matmul serves bit-identically for any count up to it, for FP8 and BF16 weights
// alike (matmul.h: matmul_skinny_max_rows).
constexpr int kInvariantSliceRows = 64;

// The sizes a pass's scratch is carved for.
struct ScratchShape {
  int rows = 0;        // pass rows (StepPlan::max_rows)
  int logits = 0;      // logit rows (StepPlan::max_logits)
  int max_n_idx = 0;   // widest attention row list of any layer (KvPool::max_n_idx)
  int max_csa_entries = 0;  // most CSA entries a sequence can reach (KvPool::max_csa_entries)
  int max_entries = 0;      // most compressed entries of any layer a sequence can reach (KvPool::max_entries)
  bool chunk_keys = false;  // long chunks' BF16 key rows (DeviceModel::prefill_attention)
  bool mtp = false;         // the model has an MTP block on the device (its input streams)
  MoeShard moe;             // this rank's routed experts (expert parallelism; moe_step.h)
  bool attn_partial = false;  // wo_b's output is a tensor-parallel partial sum (DeviceModel::tp)
};

// One compressor's outputs in a pass (§5): a = x·wkvᵀ and z = x·wgateᵀ [T, 2c] in FP32, the entry
// rows [T, c] with entry_idx naming the entry each row emits (−1: none), and entry_slots their rows
// in the KV pool or the indexer's key cache. The main compressor and the indexer's each have their
// own, so that they can run on two streams at once (attention_step.cpp).
struct CompressorScratch {
  float *a, *z;
  __nv_bfloat16* entry;
  int32_t *entry_idx, *entry_slots;
};

// Step scratch, carved from one DeviceArena (device_arena.h): the same constructor counts the
// bytes (fit check) and allocates them. Owned by the forward (one pass runs at a time). Every
// pointer is device memory; shapes in the constructor.
struct Scratch {
  Scratch(const ModelConfig& cfg, const ScratchShape& shape, DeviceArena& arena);
  int32_t *pass_slot, *ring_slot, *topk, *attn_indices, *attn_count, *sampled;
  __nv_bfloat16 *X, *u, *qr, *q, *kv, *qi, *qi_fq, *o, *zg, *attn_out, *ffn_out, *fake;
  CompressorScratch comp, idx_comp;  // the main compressor's (c = head_dim), the indexer's (index_head_dim)
  __nv_bfloat16 *Xh, *hh;  // the head's gathered streams [logits, n, D] and hidden [logits, D]
  __nv_bfloat16* mtp_in = nullptr;  // [rows, n, D] an MTP pass's input streams (ScratchShape::mtp)
  // [chunk_key_rows, head_dim] a long chunk's key rows as BF16 (kv_gather.cuh), when a pass can
  // hold a chunk longer than kInvariantSliceRows (attention_step.cpp's prefill class) and
  // ScratchShape::chunk_keys is set: the window rows such a chunk sees (rows + W − 1), then every
  // compressed entry a sequence can reach.
  __nv_bfloat16* chunk_keys = nullptr;
  int chunk_key_rows = 0;
  // [o_lora_rank, heads_per_group·head_dim] one group of an FP8 wo_a as BF16, for a long chunk's
  // rows (matmul.h grouped_out_proj_lt); with the same condition as chunk_keys.
  __nv_bfloat16* wo_a_group = nullptr;
  // [rows, D] FP32: this rank's wo_b partial sum, added over the ranks (ScratchShape::attn_partial).
  float* attn_partial = nullptr;
  uint8_t *aq, *aqs;
  float *mhc_partial, *post, *comb, *hw, *index_score, *logits;
  MoeScratch moe;  // the MoE sub-layer's own buffers (moe_step.h)
};

struct StepContext {
  int device;              // the CUDA device of this rank (layer_pass.cpp switches to it)
  const DeviceModel& m;
  KvPool& kv;
  Scratch& s;
  const StepPlan& plan;
  cudaStream_t stream;
  const TraceHook* trace;  // non-null only in eager passes
  int T;                   // rows in this pass (padding included)
  int n_logits;            // rows the head projects (the plan's logit rows)
  StepRows rows;           // = plan.device_rows()
  const int32_t* tokens;   // [T] device token ids (= plan.tokens())
  // Device int32: how many of the T rows are real; rows at or past it are padding (a decode graph
  // captured for a larger batch) whose results are thrown away, so they should cost no expert
  // work.
  const int32_t* n_real = nullptr;
  // How the pass's dense linears split their T rows into matmul calls, so that a sequence's rows
  // are computed the same way whatever else is in the step (batch invariance): a chunk longer than
  // kInvariantSliceRows is its own call (its size picks the kernel, as when it runs alone); the
  // short chunks (decode rows, drafts, small prefills) come first in the pass and go through in
  // slices of kInvariantSliceRows, where the skinny kernel's rows do not depend on M (matmul.h).
  // Empty: slices of kInvariantSliceRows over all rows.
  std::span<const RowRange> segments;
  // A second stream of this device for a stretch of the pass that depends on nothing beside it
  // (moe_step.h: the shared expert beside the routed experts), and the events that fork it off
  // `stream` and join it back; null where the pass has one stream (several ranks).
  cudaStream_t branch = nullptr;
  cudaEvent_t branch_fork = nullptr, branch_join = nullptr;

  bool tracing() const { return trace && *trace; }
  // Trace helpers: synchronise, download, convert to FP32, hand to the hook.
  void emit_bf16(const char* name, int layer, const __nv_bfloat16* p, std::vector<int64_t> shape) const;
  void emit_f32(const char* name, int layer, const float* p, std::vector<int64_t> shape) const;
  void emit_i32(const char* name, int layer, const int32_t* p, std::vector<int64_t> shape) const;
  // Rows [T, width] of p whose entry_idx ≥ 0 (the entries a compressor emitted in this pass).
  void emit_entries(const char* name, int layer, const __nv_bfloat16* p, const int32_t* entry_idx, int width) const;
};

// §12 activation quantisation of x [T, K] into the scratch (q/scale, and BF16 fake-quant values
// when `fake` is set), then y = x̃·Wᵀ for W FP8 or BF16; y BF16 [T, N] (the reference's FP8 and
// BF16 linears both return BF16).
struct QuantAct {
  const uint8_t* q = nullptr;
  const uint8_t* scale = nullptr;
  const __nv_bfloat16* fake = nullptr;  // present when a BF16-weight linear consumes it
  int K = 0;
};
QuantAct quantize(const StepContext& c, const __nv_bfloat16* x, int K, uint8_t* q, uint8_t* qs,
                  __nv_bfloat16* fake);
// The sub-layer input s.u as HC_pre left it quantised (layer_pass.cpp fuses norm and §12 FP8
// quantisation into s.aq / s.aqs / s.fake): valid until the next quantisation into s.aq.
QuantAct block_input(const StepContext& c);
// In-place RMSNorm of x [rows, dim] with its §12 FP8 quantisation into s.aq / s.aqs (and s.fake
// when a BF16-weight linear consumes it), one launch.
QuantAct rmsnorm_quantize(const StepContext& c, __nv_bfloat16* x, const __nv_bfloat16* weight, int rows,
                          int dim);
void linear_q(const StepContext& c, const DeviceLinear& w, const QuantAct& x, int rows,
              __nv_bfloat16* y);
// Two linears of the same activations (ya = x̃·Waᵀ, yb = x̃·Wbᵀ), in one launch where matmul_pair
// can: the same bits as two linear_q calls.
void linear_q_pair(const StepContext& c, const DeviceLinear& wa, __nv_bfloat16* ya, const DeviceLinear& wb,
                   __nv_bfloat16* yb, const QuantAct& x, int rows);
// The same with FP32 output, before the BF16 rounding: a tensor-parallel rank's partial sum.
void linear_q_f32(const StepContext& c, const DeviceLinear& w, const QuantAct& x, int rows, float* y);
// Unquantised-input linear with BF16 weights: y = x·Wᵀ in FP32 (router, compressor, indexer
// weights_proj, LM head), y FP32 [rows, N].
void linear_f32(const StepContext& c, const DeviceLinear& w, const __nv_bfloat16* x, int rows,
                float* y);

// In-place RMSNorm (weight nullptr: unweighted; rms_norm_eps of the model) of each of the pass's
// T rows' `heads` heads of `dim`, then the forward RoPE of each head's rope slice at its row's
// position: §4.1/§4.2's q and kv, in one launch.
void rmsnorm_rope(const StepContext& c, __nv_bfloat16* x, const __nv_bfloat16* weight, int heads, int dim,
                  const float* inv_freq);

// A stretch of a pass that depends on nothing enqueued beside it can run on StepContext::branch.
// A batch-1 layer is otherwise one chain of ≈ 43 kernels, each waiting for the one before
// (bench/results/2026-12-06-h100-early-start.md); under graph capture the branch becomes a
// parallel branch of the graph. Whether this pass branches: it has a branch stream and is not
// traced (a trace synchronises `stream` only).
bool pass_branches(const StepContext& c);
// Forks the branch off `stream` where the pass stands now and returns a context on it (c itself
// when the pass does not branch). The caller joins it back: end_branch() on the returned context
// once its work is enqueued, then join_branch() on c before the first reader of its outputs.
StepContext fork_branch(const StepContext& c);
// Whether a branch may hold linears beside the stream's: the pass branches and its rows stay on
// the skinny kernels (cuBLASLt's one workspace, gemm_lt.cu, must not serve two streams at once).
bool branch_linears(const StepContext& c);
void end_branch(const StepContext& b);
void join_branch(const StepContext& c);

void attention_step(const StepContext& c, const DeviceLayer& w, int layer);

}  // namespace dsv4::cuda
