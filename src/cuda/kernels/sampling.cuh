// Token choice on the device (decode graph, after the LM head, §9): greedy or temperature sampling
// with top-k / top-p, following engine/sampler.h's semantics where a device can. Log-probabilities
// and min-p stay with the CPU sampler (engine/sampler.cpp).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// Written instead of a token id for a row whose logits contain NaN or +inf, or are all −inf
// (the CPU sampler rejects the same rows with an error; a kernel cannot throw).
constexpr int32_t kSampleInvalidToken = -1;

// Per row, with the order "more likely" = larger logit, ties to the lower id (engine/sampler.cpp):
// - temperature == 0: the most likely id (argmax, lowest id on ties);
// - else p ∝ exp((logit − max) / temperature), cut to the top_k most likely (0 = all), then to the
//   shortest most-likely-first prefix whose mass reaches top_p of what top_k left (1 = all), and
//   one draw from the renormalised survivors.
// The draw is exact for weights quantised to 2^-44 of the most likely token's: a token whose
// probability is below ~2^-45 of the top token's is never drawn. The random number comes from
// Philox4x32-10 (curand) keyed by seed with counter (row, *step), so a replayed graph draws fresh
// numbers each step and the same (seed, *step, logits) always give the same tokens; the launch
// adds 1 to *step after every row has read it.
//
// Per-row mode (per_row set; step and the scalar parameters are ignored): row r samples with
// per_row[r]'s parameters and the Philox counter (0, per_row[r].step), so a row's draw depends
// only on its own seed, step and logits — the same alone as in any batch, and the same as a
// one-row launch with *step = per_row[r].step.
struct RowSampling {
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  uint32_t pad = 0;
  uint64_t seed = 0;
  uint64_t step = 0;  // the Philox counter: the sampled token's position
};

struct SampleParams {
  const float* logits = nullptr;   // [rows, vocab] fp32
  int32_t* token = nullptr;        // [rows] out
  uint64_t* step = nullptr;        // [1] device counter (scalar mode)
  const RowSampling* per_row = nullptr;  // [rows] device (per-row mode)
  int rows = 0, vocab = 0, top_k = 0;
  float temperature = 0.0f, top_p = 1.0f;
  uint64_t seed = 0;
};

// rows >= 0, 1 <= vocab, top_k >= 0, temperature finite >= 0, top_p in (0, 1] (per-row values
// are the caller's to validate).
void launch_sample(const SampleParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
