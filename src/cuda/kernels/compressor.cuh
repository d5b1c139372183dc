// The streaming compressor step on the GPU (§5, state §5.5): pools every window a chunk of tokens
// closes into one entry (RMSNorm, RoPE, BF16). Projections (a, z) and the entry's quantisation are other files'.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernels/step_rows.cuh"

namespace dsv4::cuda {

// Compressor step (§5) for the T rows of a pass, which hold consecutive chunks of several
// sequences (step_rows.cuh). Appends z+ape, keeps a and z+ape of the last ring_rows positions of
// each sequence in its slot's ring (row = position % ring_rows), and for every token that closes
// a window (pos+1 ≡ 0 mod m) emits entry j = (pos+1)/m − 1: per channel softmax pooling over the
// window's slots (CSA, coff = 2: the previous window's A half ∪ this window's B half, A absent for
// j = 0; HCA, coff = 1: this window), RMSNorm with `norm`, RoPE on the last rope_dim dims at
// position j·m, rounded to BF16.
//
// For a row of a chunk starting at position pos0, rows of positions < pos0 are read from its
// slot's ring, rows ≥ pos0 from the chunk's a/z (so a chunk may exceed the ring size); each ring
// is rewritten with its chunk's last min(n, ring_rows) rows by a second launch on the same stream,
// after all entries are pooled. The pooling reads only the coff·m positions ending at its token;
// the rows beyond (ring_rows − coff·m) are the speculative rollback margin (the pool sizes it):
// a sequence fed up to position P − 1 may resume at any P' ≥ P − (ring_rows − coff·m) and still
// finds every row it reads, so a rollback is a truncation. Ring rows of positions < 0 are never
// read, so a fresh sequence needs no ring reset. Rows of `entry` whose token closes no window are not written (entry_idx
// says which rows are valid); padding rows (pos < 0) emit nothing and touch no ring.
struct CompressorParams {
  const float* a = nullptr;             // [T, coff·c] fp32 x·wkvᵀ of the pass's rows
  const float* z = nullptr;             // [T, coff·c] fp32 x·wgateᵀ (ape is added here)
  const float* ape = nullptr;           // [m, coff·c] fp32
  const __nv_bfloat16* norm = nullptr;  // [c] bf16 RMSNorm weight
  const float* inv_freq = nullptr;      // [rope_dim/2] the layer's RoPE table (rope.cuh rope_inv_freq)
  StepRows rows;                        // positions, slots, chunk bounds (step_rows.cuh)
  float* ring_a = nullptr;              // [n_slots, ring_rows, coff·c] state (a of earlier positions)
  float* ring_z = nullptr;              // [n_slots, ring_rows, coff·c] state (z + ape of earlier positions)
  __nv_bfloat16* entry = nullptr;       // [T, c] out: row t = the entry token t emits
  int32_t* entry_idx = nullptr;         // [T] out: j of row t, or −1 when token t closes no window
  int T = 0, m = 0, c = 0, coff = 0, rope_dim = 0;
  float eps = 1e-6f;                    // rms_norm_eps
  int ring_rows = 0;                    // ring rows per slot: coff·m + rollback margin (>= coff·m)
};

// T >= 0 (0: nothing), coff ∈ {1, 2}, m >= 1, ring_rows >= coff·m, rope_dim even with
// 0 < rope_dim <= c. Two kernel launches, no allocation, no synchronisation: capturable in a CUDA
// graph.
void launch_compressor(const CompressorParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
