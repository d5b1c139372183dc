// The MTP block's forward (§10): the rows the main forward runs with ForwardItem::mtp, and the
// drafting steps of Forward::draft (cpu_forward.cpp drives both). The decoder block is
// decoder_layer.cpp's; the per-sequence MTP state is sequence_state.h's.
#pragma once

#include <cstdint>

#include "cpu/cpu_model.h"

namespace dsv4 {

// T consecutive MTP positions p0 = seq.mtp_position() …: streams [T, n, D] are the main model's
// final (pre-HC_head) streams at positions p, next_tokens [T] the tokens at p + 1. Advances the
// MTP block's window state. Out, each optional: logits [T, V] (the draft logits of tokens p + 2),
// out_streams [T, n, D] the block's own pre-HC_head streams (§10: the next draft's "previous
// hidden"). Block `block` (0-based) of model.weights.mtp; a checkpoint without mtp.* tensors →
// dsv4::Error.
void mtp_forward(const CpuModel& model, CpuSequenceState& seq, int block, const float* streams,
                 const int32_t* next_tokens, int64_t T, float* logits, float* out_streams = nullptr,
                 const TraceHook* trace = nullptr);

}  // namespace dsv4
