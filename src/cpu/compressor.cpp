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

void CompressorState::truncate(int64_t n_tokens) {
  if (ratio == 0) return;  // never fed
  const int64_t keep = n_tokens / ratio;
  DSV4_CHECK_MSG(keep <= n_entries, "compressor truncated forward: ", keep, " > ", n_entries);
  n_entries = keep;
  entries.resize(size_t(keep * width));
}

int64_t compressor_step(const CpuContext& ctx, const CompressorWeights& w, const RopeTable& rope,
                        const float* x, int64_t T, int64_t pos0, CompressorState& st) {
  const int64_t m = w.ratio, c = w.width, coff = compressor_overlap(m);
  const int64_t cw = coff * c, R = compressor_ring_rows(m);
  DSV4_CHECK_MSG(st.n_entries == pos0 / m, "compressor entries out of step with position ", pos0);
  std::vector<float> a(size_t(T * cw)), z(size_t(T * cw));
  linear(ctx, x, T, w.wkv, a.data());
  linear(ctx, x, T, w.wgate, z.data());
  const std::vector<float> ape = load_vector(w.ape);  // [m, coff·c]
  DSV4_CHECK(int64_t(ape.size()) == m * cw);
  if (st.rows_a.empty()) {
    st.ratio = m;
    st.width = c;
    st.rows_a.assign(size_t(R * cw), 0.0f);
    st.rows_z.assign(size_t(R * cw), 0.0f);
  }
  DSV4_CHECK(st.ratio == m && st.width == c);
  // Row of position p, column e.
  auto a_at = [&](int64_t p, int64_t e) { return st.rows_a[size_t((p % R) * cw + e)]; };
  auto z_at = [&](int64_t p, int64_t e) { return st.rows_z[size_t((p % R) * cw + e)]; };
  const int64_t first_new = st.n_entries;
  std::vector<float> pooled(static_cast<size_t>(c));
  for (int64_t i = 0; i < T; ++i) {
    const int64_t t = pos0 + i, slot = t % m;
    float* ra = st.rows_a.data() + (t % R) * cw;
    float* rz = st.rows_z.data() + (t % R) * cw;
    for (int64_t e = 0; e < cw; ++e) {
      ra[e] = a[size_t(i * cw + e)];
      rz[e] = z[size_t(i * cw + e)] + ape[size_t(slot * cw + e)];
    }
    if (slot < m - 1) continue;

    // Window j complete: pool per channel over its slots (softmax over positions, not channels).
    const int64_t j = st.n_entries, first = j * m;  // window j = positions first … first+m−1
    const bool use_prev = coff == 2 && j > 0;       // CSA: window j−1 through series A
    const int64_t off_b = (coff == 2) ? c : 0;      // CSA: current window through series B
    for (int64_t e = 0; e < c; ++e) {
      float mx = -INFINITY;
      if (use_prev)
        for (int64_t s = 0; s < m; ++s) mx = std::max(mx, z_at(first - m + s, e));
      for (int64_t s = 0; s < m; ++s) mx = std::max(mx, z_at(first + s, off_b + e));
      float den = 0.0f, num = 0.0f;
      if (use_prev)
        for (int64_t s = 0; s < m; ++s) {
          const float p = std::exp(z_at(first - m + s, e) - mx);
          den += p;
          num += p * a_at(first - m + s, e);
        }
      for (int64_t s = 0; s < m; ++s) {
        const float p = std::exp(z_at(first + s, off_b + e) - mx);
        den += p;
        num += p * a_at(first + s, off_b + e);
      }
      pooled[size_t(e)] = num / den;
    }
    rms_norm_rows(pooled.data(), 1, c, &w.norm, ctx.cfg.rms_norm_eps);
    apply_rope(rope, pooled.data(), c, j * m);  // §5.3: first position of window j
    ctx.bf16(pooled.data(), c);  // official-bf16: a and z stay FP32, the entry is stored BF16
    st.entries.insert(st.entries.end(), pooled.begin(), pooled.end());
    ++st.n_entries;
  }
  return first_new;
}

}  // namespace dsv4
