// RoPE (§4.4): the two frequency tables (main θ, compress θ with YaRN, no magnitude scaling) and
// the interleaved-pair rotation of the LAST rope_dim dims of a vector. Which table a layer uses
// is decided by its LayerSpec (cpu_forward.cpp); this file only rotates.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace dsv4 {

struct RopeTable {
  int64_t rope_dim = 0;         // r (64): rotated trailing dims
  std::vector<float> inv_freq;  // [r/2] ω_i (YaRN-blended for the compress table)
};

RopeTable make_rope_table(const RopeParams& p, int64_t rope_dim);

// Rotates x[dim - r : dim] by position pos: pair i = (x[2i], x[2i+1]) of the slice,
// y[2i] = x[2i]·cos − x[2i+1]·sin, y[2i+1] = x[2i]·sin + x[2i+1]·cos with angle pos·ω_i;
// inverse = conjugate rotation (sin negated), used on the attention output (§4.4).
void apply_rope(const RopeTable& table, float* x /* [dim] */, int64_t dim, int64_t pos,
                bool inverse = false);

}  // namespace dsv4
