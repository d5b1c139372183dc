// Compressor (§5): projects tokens, carries partial windows across calls (§5.5), pools every
// completed window into one entry (HCA m = 128; CSA m = 4 with overlapping A/B halves), applies
// the norm and RoPE at the window's first position. Quantising the new entries (§5.3 step 3) is
// left to the owner (attention.cpp: FP8 KV; indexer.cpp: Hadamard + FP4).
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/context.h"
#include "cpu/rope.h"
#include "model/weights.h"

namespace dsv4 {

struct CompressorState {
  int64_t n_pending = 0;       // tokens of the current incomplete window (= position mod m)
  std::vector<float> pend_a;   // [m, coff·c] a_t of those tokens
  std::vector<float> pend_z;   // [m, coff·c] z_t + ape[t mod m]
  bool has_prev = false;       // CSA: a previous complete window exists
  std::vector<float> prev_a;   // [m, c] CSA: previous window's A half
  std::vector<float> prev_z;   // [m, c]
  std::vector<float> entries;  // [n_entries, c] emitted entries (entry j covers window j)
  int64_t n_entries = 0;

  void reset() { *this = CompressorState{}; }
};

// Feeds the tokens at positions pos0 … pos0+T−1 (x [T, D], after attn_norm). Every window that
// completes is pooled and appended to st.entries. Returns the index of the first new entry
// (new entries are [returned, st.n_entries)).
int64_t compressor_step(const CpuContext& ctx, const CompressorWeights& w, const RopeTable& rope,
                        const float* x, int64_t T, int64_t pos0, CompressorState& st);

// Entries visible to the query at position t: j < floor((t+1)/m) (§5.4).
inline int64_t visible_entries(int64_t t, int64_t m) { return (t + 1) / m; }

}  // namespace dsv4
