// Attention sub-layer (§4, §7): q path, shared K=V path, 128-token window ring, compressed entries
// (HCA: all visible; CSA: the indexer's top-k), sink softmax, inverse RoPE, grouped wo_a then wo_b.
// The compressor and indexer internals are in compressor.cpp / indexer.cpp.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/compressor.h"
#include "cpu/context.h"
#include "cpu/rope.h"
#include "model/weights.h"

namespace dsv4 {

// Per sequence and layer (§5.5, §13), every part kept by position so that a rollback truncates.
struct AttentionState {
  std::vector<float> ring;   // [window_ring_rows(W), d] K=V rows, row = position mod window_ring_rows
  CompressorState comp;      // main compressor (ratio 4 / 128 layers)
  CompressorState index;     // indexer key compressor (ratio 4 layers)
  void reset() {
    ring.clear();
    comp.reset();
    index.reset();
  }
  // Forgets positions n_tokens … (the ring's rows need nothing: see window_ring_rows).
  void truncate(int64_t n_tokens) {
    comp.truncate(n_tokens);
    index.truncate(n_tokens);
  }
};

// Official numerics on one K=V row (window or compressed): FP8 1×64 round-trip of the NoPE dims.
void kv_fake_quant(const ModelConfig& cfg, float* kv /* [d] */);

// x [T, D] (after attn_norm) at positions pos0 … pos0+T−1 → out [T, D].
void attention_forward(const CpuContext& ctx, const AttentionWeights& w, const LayerSpec& spec,
                       int layer, const RopeTable& rope, const float* x, int64_t T, int64_t pos0,
                       AttentionState& st, float* out);

}  // namespace dsv4
