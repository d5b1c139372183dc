// Several routed experts of one MoE sub-layer, a few rows each, computed together on the pool:
// the shape of a decode step's host-tier work (cuda/host_experts.h), where one row brings about
// one expert per layer and 16 threads must share it. Each expert is cut into units of
// kExpertUnitRows output rows — of w1/w3 (SwiGLU into h, then h's §12 quantisation of the same
// columns) in a first sweep, of w2 in a second — so a call costs two wake-ups of the pool however
// many experts it holds. Every element is computed as expert_forward (cpu/moe.h) computes it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cpu/context.h"
#include "model/weights.h"

namespace dsv4 {

// 128 rows of a Flash expert's w1 and w3 are 512 KiB of MXFP4, of w2 128 KiB: enough work per
// unit, and 16 units per expert and sweep. A whole number of §12 blocks, so a hidden unit can
// quantise the columns of h it made (expert_act_quant works per 128 columns).
constexpr int64_t kExpertUnitRows = 128;

struct ExpertRows {
  const ExpertWeights* weights = nullptr;
  int64_t n = 0;                  // rows
  std::vector<float> x;           // [n, D], through expert_act_quant (or already so quantised)
  std::vector<float> row_weight;  // [n] routing weights applied to h before w2, or empty
  std::vector<float> h;           // [n, I] scratch
  std::vector<float> y;           // [n, D] output
};

// Sizes h and y, then y = expert_forward(x) for every entry.
void run_expert_rows(const CpuContext& ctx, std::span<ExpertRows> experts);

}  // namespace dsv4
