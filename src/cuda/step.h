// What one forward step on the GPU works with: the device model, the per-sequence state
// (caches and compressor rings at fixed addresses), the step's scratch buffers and the stream.
// The sub-layers are attention_step.cpp and moe_step.cpp; the loop and the graph are
// cuda_forward.cpp's. Every function here only enqueues work (no host sync unless tracing), so
// the same code runs eagerly and under CUDA-graph capture.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cuda/device_arena.h"
#include "cuda/device_buffer.h"
#include "cuda/device_model.h"
#include "cuda/moe_step.h"
#include "model/forward.h"

namespace dsv4::cuda {

constexpr int kMaxChunk = 128;  // tokens per pass through the layers (prefill splits longer chunks)
constexpr int kKvBlockSize = 64;  // cache rows per page (FlashMLA's page size)

// One layer's slice of a sequence's state (§13): the FP8 KV cache (window ring of
// sliding_window + kMaxChunk rows, so a chunk's rows never overwrite rows its own queries read,
// then the compressed entries), the compressor rings and the indexer's FP4 keys.
struct LayerState {
  int ring = 0;         // window slots
  int max_entries = 0;  // compressed entries this sequence can reach (0 for sliding layers)
  int n_idx = 0;        // attention index-list width: window + compressed candidates
  DeviceBuffer<uint8_t> cache;                    // [pages, kv_page_bytes]
  DeviceBuffer<float> comp_ring_a, comp_ring_z;   // [coff·m, coff·c]
  DeviceBuffer<float> idx_ring_a, idx_ring_z;     // indexer compressor rings
  DeviceBuffer<uint8_t> idx_keys, idx_key_scale;  // [max_entries, 64] e2m1, [max_entries, 4] ue8m0
};

class CudaSequenceState final : public SequenceState {
 public:
  CudaSequenceState(const DeviceModel& m, int64_t max_tokens);
  ~CudaSequenceState() override;
  int64_t position() const override { return position_; }
  void reset() override { position_ = 0; }  // stale rows are never read: visibility is by position
  int64_t max_tokens() const { return max_tokens_; }
  void advance(int64_t n) { position_ += n; }

  std::vector<LayerState> layers;
  DeviceBuffer<float> index_score;     // [kMaxChunk, max CSA entries] indexer scratch
  DeviceBuffer<int32_t> attn_indices;  // [kMaxChunk, max n_idx]
  cudaGraphExec_t decode_graph = nullptr;  // captured at the first one-token step
  // What decode_graph samples with after the head (nullopt: no sampler in it); a step that asks
  // for other parameters re-captures it (the launch bakes them in).
  std::optional<DeviceSampling> decode_sampling;
  int64_t decode_replays = 0;  // of the current decode_graph (its first may load kernel modules)
  static size_t bytes_needed(const ModelConfig& cfg, int64_t max_tokens);

 private:
  int64_t position_ = 0, max_tokens_ = 0;
};

// Step scratch for passes of up to `rows` tokens, carved from one DeviceArena (device_arena.h): the
// same constructor counts the bytes (fit check) and allocates them. Owned by the forward, shared by
// its sequences (one step runs at a time). Every pointer is device memory.
struct Scratch {
  Scratch(const ModelConfig& cfg, int rows, DeviceArena& arena);
  int32_t *tokens, *pos, *slots, *entry_idx, *entry_slots, *topk;
  __nv_bfloat16 *X, *u, *qr, *q, *kv, *entry, *qi, *qi_fq, *o, *zg, *attn_out, *ffn_out, *hh, *fake;
  uint8_t *aq, *aqs;
  float *mhc_partial, *post, *comb, *ca, *cz, *hw, *logits;
  MoeScratch moe;  // the MoE sub-layer's own buffers (moe_step.h)
};

struct StepContext {
  const DeviceModel& m;
  CudaSequenceState& seq;
  Scratch& s;
  cudaStream_t stream;
  const TraceHook* trace;  // non-null only in eager steps
  int T;                   // tokens in this pass (≤ kMaxChunk)
  // Device int32: how many of the T rows are real; rows at or past it are padding (a decode graph
  // captured for a larger batch) whose results are thrown away, so they should cost no expert
  // work. nullptr: all T rows are real.
  const int32_t* n_real = nullptr;

  bool tracing() const { return trace && *trace; }
  // Trace helpers: synchronise, download, convert to FP32, hand to the hook.
  void emit_bf16(const char* name, int layer, const __nv_bfloat16* p, std::vector<int64_t> shape) const;
  void emit_f32(const char* name, int layer, const float* p, std::vector<int64_t> shape) const;
  void emit_i32(const char* name, int layer, const int32_t* p, std::vector<int64_t> shape) const;
  // Rows [T, width] of p whose entry_idx ≥ 0 (the entries a compressor emitted in this pass).
  void emit_entries(const char* name, int layer, const __nv_bfloat16* p, int width) const;
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
void linear_q(const StepContext& c, const DeviceLinear& w, const QuantAct& x, int rows,
              __nv_bfloat16* y);
// Unquantised-input linear with BF16 weights: y = x·Wᵀ in FP32 (router, compressor, indexer
// weights_proj, LM head), y FP32 [rows, N].
void linear_f32(const StepContext& c, const DeviceLinear& w, const __nv_bfloat16* x, int rows,
                float* y);

// In-place RMSNorm of `rows` rows of `dim` (weight nullptr: unweighted), rms_norm_eps of the model.
void rmsnorm(const StepContext& c, __nv_bfloat16* x, const __nv_bfloat16* weight, int rows, int dim);

void attention_step(const StepContext& c, const DeviceLayer& w, int layer, LayerState& st);

}  // namespace dsv4::cuda
