// Compressor state machine (§5). Per token: a_t = wkv·x_t, z_t = wgate·x_t + ape[t mod m] (FP32,
// §12). A window closes at token (j+1)·m − 1 and emits entry j:
//   HCA: p_j[e] = Σ_{t∈W_j} softmax_t(z_t[e]) · a_t[e]                         (§5.1)
//   CSA: softmax over the 8 slots {z^A of W_{j−1}} ∪ {z^B of W_j}, per channel (§5.2);
//        for j = 0 the A slots are absent (weight 0).
// then k_j = RMSNorm_norm(p_j), RoPE at position j·m (§5.3).
#include "cpu/compressor.h"

#include <cmath>

#include "cpu/linear.h"
#include "util/error.h"

namespace dsv4 {

int64_t compressor_step(const CpuContext& ctx, const CompressorWeights& w, const RopeTable& rope,
                        const float* x, int64_t T, int64_t pos0, CompressorState& st) {
  const int64_t m = w.ratio, c = w.width, coff = compressor_overlap(m);
  const int64_t cw = coff * c;
  DSV4_CHECK_MSG(st.n_pending == pos0 % m, "compressor state out of step with position ", pos0);
  DSV4_CHECK_MSG(st.n_entries == pos0 / m, "compressor entries out of step with position ", pos0);
  std::vector<float> a(size_t(T * cw)), z(size_t(T * cw));
  linear(ctx, x, T, w.wkv, a.data());
  linear(ctx, x, T, w.wgate, z.data());
  const std::vector<float> ape = load_vector(w.ape);  // [m, coff·c]
  DSV4_CHECK(int64_t(ape.size()) == m * cw);
  if (st.pend_a.empty()) {
    st.pend_a.assign(size_t(m * cw), 0.0f);
    st.pend_z.assign(size_t(m * cw), 0.0f);
    if (coff == 2) {
      st.prev_a.assign(size_t(m * c), 0.0f);
      st.prev_z.assign(size_t(m * c), 0.0f);
    }
  }
  const int64_t first_new = st.n_entries;
  std::vector<float> pooled(static_cast<size_t>(c));
  for (int64_t i = 0; i < T; ++i) {
    const int64_t slot = st.n_pending;  // = (pos0 + i) mod m
    for (int64_t e = 0; e < cw; ++e) {
      st.pend_a[size_t(slot * cw + e)] = a[size_t(i * cw + e)];
      st.pend_z[size_t(slot * cw + e)] = z[size_t(i * cw + e)] + ape[size_t(slot * cw + e)];
    }
    if (++st.n_pending < m) continue;

    // Window j complete: pool per channel over its slots (softmax over positions, not channels).
    const int64_t j = st.n_entries;
    for (int64_t e = 0; e < c; ++e) {
      float mx = -INFINITY;
      const bool use_prev = coff == 2 && st.has_prev;
      const int64_t off_b = (coff == 2) ? c : 0;  // CSA: current window through series B
      if (use_prev)
        for (int64_t s = 0; s < m; ++s) mx = std::max(mx, st.prev_z[size_t(s * c + e)]);
      for (int64_t s = 0; s < m; ++s) mx = std::max(mx, st.pend_z[size_t(s * cw + off_b + e)]);
      float den = 0.0f, num = 0.0f;
      if (use_prev)
        for (int64_t s = 0; s < m; ++s) {
          const float p = std::exp(st.prev_z[size_t(s * c + e)] - mx);
          den += p;
          num += p * st.prev_a[size_t(s * c + e)];
        }
      for (int64_t s = 0; s < m; ++s) {
        const float p = std::exp(st.pend_z[size_t(s * cw + off_b + e)] - mx);
        den += p;
        num += p * st.pend_a[size_t(s * cw + off_b + e)];
      }
      pooled[size_t(e)] = num / den;
    }
    rms_norm_rows(pooled.data(), 1, c, &w.norm, ctx.cfg.rms_norm_eps);
    apply_rope(rope, pooled.data(), c, j * m);  // §5.3: first position of window j
    ctx.bf16(pooled.data(), c);  // official-bf16: a and z stay FP32, the entry is stored BF16
    st.entries.insert(st.entries.end(), pooled.begin(), pooled.end());
    ++st.n_entries;
    if (coff == 2) {  // §5.5: keep this window's A half for entry j + 1
      for (int64_t s = 0; s < m; ++s)
        for (int64_t e = 0; e < c; ++e) {
          st.prev_a[size_t(s * c + e)] = st.pend_a[size_t(s * cw + e)];
          st.prev_z[size_t(s * c + e)] = st.pend_z[size_t(s * cw + e)];
        }
      st.has_prev = true;
    }
    st.n_pending = 0;
  }
  return first_new;
}

}  // namespace dsv4
