// One pass over the whole model on the GPU for the rows of a step plan (§2): embedding, the L
// decoder blocks (mHC around attention_step and moe_step), and the head for the plan's logit
// rows, optionally followed by the device sampler. The CUDA twin of cpu/decoder_layer.cpp and the
// CPU forward's layer loop; the runtime that builds plans and replays graphs is cuda_forward.cpp.
#pragma once

#include "cuda/step.h"

namespace dsv4::cuda {

// Enqueues the pass (no host sync unless tracing): s.logits [n_logits, V] afterwards, and with
// `sample` the plan's per-row sampling into s.sampled [n_logits].
void enqueue_pass(const StepContext& c, bool sample);

}  // namespace dsv4::cuda
