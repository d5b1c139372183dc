// Compressor (§5): projects tokens, keeps their rows by position across calls (§5.5), pools every
// completed window into one entry (HCA m = 128; CSA m = 4 with overlapping A/B halves), applies
// the norm and RoPE at the window's first position. Quantising the new entries (§5.3 step 3) is
// left to the owner (attention.cpp: FP8 KV; indexer.cpp: Hadamard + FP4).
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/context.h"
#include "cpu/rope.h"
#include "model/config.h"
#include "model/rollback.h"
#include "model/weights.h"

namespace dsv4 {


struct CompressorState {
  // Row t mod compressor_ring_rows(m) holds position t's a_t and z_t + ape[t mod m] (§5.5): the
  // current incomplete window is positions floor(P/m)·m … P−1, the CSA previous window the m before.
  std::vector<float> rows_a;   // [kept rows, coff·c]
  std::vector<float> rows_z;   // [kept rows, coff·c]
  std::vector<float> entries;  // [n_entries, c] emitted entries (entry j covers window j)
  int64_t n_entries = 0;
  int64_t ratio = 0, width = 0;  // m and c, set on first use

  void reset() { *this = CompressorState{}; }
  // Forgets positions n_tokens … : the entries of windows that closed there (the rows need
  // nothing: the next positions overwrite them before any window reads them).
  void truncate(int64_t n_tokens);
};

// Feeds the tokens at positions pos0 … pos0+T−1 (x [T, D], after attn_norm). Every window that
// completes is pooled and appended to st.entries. Returns the index of the first new entry
// (new entries are [returned, st.n_entries)).
int64_t compressor_step(const CpuContext& ctx, const CompressorWeights& w, const RopeTable& rope,
                        const float* x, int64_t T, int64_t pos0, CompressorState& st);

// Entries visible to the query at position t: j < floor((t+1)/m) (§5.4).
inline int64_t visible_entries(int64_t t, int64_t m) { return (t + 1) / m; }

}  // namespace dsv4
