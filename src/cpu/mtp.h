// The MTP block's forward (§10), a separate call from the main forward: used for speculative
// drafting. The main model's final streams come from the "final.streams" trace of
// Forward::forward (or from the engine); the decoder block is decoder_layer.cpp's.
#pragma once

#include <cstdint>

#include "cpu/cpu_model.h"

namespace dsv4 {

// Draft logits for T consecutive draft positions p0 = seq.mtp_position …: streams [T, n, D] are
// the main model's final (pre-HC_head) streams at positions p, next_tokens [T] the tokens at
// p + 1. logits [T, V]. Advances the MTP block's window state. Block `block` (0-based) of
// model.weights.mtp; a checkpoint without mtp.* tensors → dsv4::Error.
void mtp_forward(const CpuModel& model, CpuSequenceState& seq, int block, const float* streams,
                 const int32_t* next_tokens, int64_t T, float* logits,
                 const TraceHook* trace = nullptr);

}  // namespace dsv4
