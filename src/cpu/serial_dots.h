// Dot products of one query with several keys, each summed serially over the elements: the
// reference order of the attention scores (cpu/attention.cpp) and the indexer's (cpu/indexer.cpp).
// Each key's sum is the same single chain in element order as a one-key loop, so the results are
// bit-identical to it; eight keys go together so that eight independent chains overlap, where one
// chain waits on each add's latency.
#pragma once

#include <cstdint>

namespace dsv4 {

// out[s] = Σ_i q[i] · keys[s][i], summed for i = 0, 1, …, d − 1, for s < n_keys.
inline void serial_dots(const float* q, const float* const* keys, int64_t n_keys, int64_t d, float* out) {
  constexpr int kKeys = 8;
  int64_t s = 0;
  for (; s + kKeys <= n_keys; s += kKeys) {
    float acc[kKeys] = {};
    for (int64_t i = 0; i < d; ++i)
      for (int l = 0; l < kKeys; ++l) acc[l] += q[i] * keys[s + l][i];
    for (int l = 0; l < kKeys; ++l) out[s + l] = acc[l];
  }
  for (; s < n_keys; ++s) {
    float acc = 0.0f;
    for (int64_t i = 0; i < d; ++i) acc += q[i] * keys[s][i];
    out[s] = acc;
  }
}

}  // namespace dsv4
