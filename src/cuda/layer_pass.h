// One pass over the whole model on the GPU for the rows of a step plan (§2): embedding, the L
// decoder blocks (mHC around attention_step and moe_step), and the head for the plan's logit
// rows, optionally followed by the device sampler; and the MTP block's pass (§10). The CUDA twin
// of cpu/decoder_layer.cpp, the CPU forward's layer loop and cpu/mtp.cpp; the runtime that builds
// plans and replays graphs is cuda_forward.cpp.
#pragma once

#include <span>

#include "cuda/step.h"

namespace dsv4::cuda {

class Collective;   // collective.h
class HostExperts;  // host_experts.h

// A pass runs on the ranks of the model (expert parallelism, docs/parallel.md): one
// StepContext per rank, the same plan, each rank's own weights, KV and scratch. Every rank computes
// everything but the routed experts it does not hold; at each MoE the collective sums the ranks'
// routed outputs (pick order, moe_step.h), so the ranks are enqueued in lockstep, sub-layer by
// sub-layer. One rank without a collective is the plain pass. The head (and sampler) runs on
// rank 0 only: every rank's final streams are the same.
// With a host tier (one rank), the host computes the routed experts the rank does not hold and
// adds their outputs to the rank's before the combine.
struct Ranks {
  std::span<const StepContext> contexts;
  Collective* comm = nullptr;  // nullptr: one rank, whose MoE combines its own outputs
  HostExperts* host = nullptr;
};

// Enqueues the pass (no host sync unless tracing): s.X the final streams [T, n, D] (before the
// head) on every rank, rank 0's s.logits [n_logits, V] afterwards, and with `sample` the plan's
// per-row sampling into rank 0's s.sampled [n_logits].
void enqueue_pass(const Ranks& ranks, bool sample);

// The MTP block (c.m.mtp, §10) over the rows of c.plan, each a position p of its sequence with the
// token at p + 1 as its plan token and its input streams (the main model's final streams at p, or
// the block's own for a recurrent draft) in s.mtp_in [T, n, D]. Advances the block's window ring
// (pool c.m.layers.size()); s.X holds the block's output streams afterwards (the next draft's
// input), rank 0's s.logits the draft logits of the plan's logit rows.
void enqueue_mtp_pass(const Ranks& ranks);

}  // namespace dsv4::cuda
