// RoPE tables and rotation. Frequencies and angles are FP32 products as in the reference
// (precompute_freqs_cis) and HF (inv_freq · position in float32); cos/sin of that FP32 angle.
#include "cpu/rope.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace dsv4 {

RopeTable make_rope_table(const RopeParams& p, int64_t rope_dim) {
  DSV4_CHECK(rope_dim > 0 && rope_dim % 2 == 0);
  RopeTable t;
  t.rope_dim = rope_dim;
  const int64_t half = rope_dim / 2;
  t.inv_freq.resize(size_t(half));
  // §4.4 YaRN: corr(β) = r·ln(L0/(2πβ)) / (2 ln θ); lo = max(floor(corr(β_fast)), 0),
  // hi = min(ceil(corr(β_slow)), r−1); ramp over pair index; ω' = ω(1−ramp) + (ω/s)·ramp.
  double lo = 0, hi = 0;
  if (p.yarn) {
    auto corr = [&](double beta) {
      return double(rope_dim) * std::log(double(p.original_max_position) / (2 * M_PI * beta)) /
             (2 * std::log(p.theta));
    };
    lo = std::max(std::floor(corr(p.beta_fast)), 0.0);
    hi = std::min(std::ceil(corr(p.beta_slow)), double(rope_dim - 1));
    if (lo == hi) hi += 0.001;  // as the reference: avoid a zero-width ramp
  }
  for (int64_t i = 0; i < half; ++i) {
    const float pos_freq = float(std::pow(p.theta, double(2 * i) / double(rope_dim)));
    const float extrap = 1.0f / pos_freq;
    if (!p.yarn) {
      t.inv_freq[size_t(i)] = extrap;
      continue;
    }
    const float interp = 1.0f / (float(p.factor) * pos_freq);
    const float ramp = float(std::clamp((double(i) - lo) / (hi - lo), 0.0, 1.0));
    t.inv_freq[size_t(i)] = interp * ramp + extrap * (1.0f - ramp);
  }
  return t;
}

void apply_rope(const RopeTable& table, float* x, int64_t dim, int64_t pos, bool inverse) {
  const int64_t r = table.rope_dim;
  DSV4_CHECK(dim >= r);
  float* v = x + (dim - r);
  for (int64_t i = 0; i < r / 2; ++i) {
    const float angle = float(pos) * table.inv_freq[size_t(i)];
    const float c = float(std::cos(double(angle)));
    const float s = inverse ? -float(std::sin(double(angle))) : float(std::sin(double(angle)));
    const float a = v[2 * i], b = v[2 * i + 1];
    v[2 * i] = a * c - b * s;
    v[2 * i + 1] = a * s + b * c;
  }
}

}  // namespace dsv4
