// The streaming compressor step on the GPU (§5, state §5.5): pools every window a chunk of tokens
// closes into one entry (RMSNorm, RoPE, BF16). Projections (a, z) and the entry's quantisation are other files'.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// Compressor step (§5) for T consecutive tokens at positions pos[0] … pos[0]+T−1. Appends z+ape,
// keeps a and z+ape of the last coff·m positions in a ring (row = position % (coff·m)), and for
// every token that closes a window (pos+1 ≡ 0 mod m) emits entry j = (pos+1)/m − 1:
// per channel softmax pooling over the window's slots (CSA, coff = 2: the previous window's A half
// ∪ this window's B half, A absent for j = 0; HCA, coff = 1: this window), RMSNorm with `norm`,
// RoPE on the last rope_dim dims at position j·m, rounded to BF16.
//
// Rows of positions < pos[0] are read from the ring, rows ≥ pos[0] from this chunk's a/z (so T may
// exceed the ring size); the ring is rewritten with the chunk's last min(T, coff·m) rows by a
// second launch on the same stream, after all of the chunk's entries are pooled. Ring rows of
// positions < 0 are never read, so a fresh sequence needs no ring reset. Rows of `entry` whose
// token closes no window are not written (entry_idx says which rows are valid).
struct CompressorParams {
  const float* a = nullptr;             // [T, coff·c] fp32 x·wkvᵀ of the chunk's tokens
  const float* z = nullptr;             // [T, coff·c] fp32 x·wgateᵀ (ape is added here)
  const float* ape = nullptr;           // [m, coff·c] fp32
  const __nv_bfloat16* norm = nullptr;  // [c] bf16 RMSNorm weight
  const float* inv_freq = nullptr;      // [rope_dim/2] the layer's RoPE table (rope.cuh rope_inv_freq)
  const int32_t* pos = nullptr;         // [T] absolute positions, pos[t] = pos[0] + t
  float* ring_a = nullptr;              // [coff·m, coff·c] state (a of earlier positions)
  float* ring_z = nullptr;              // [coff·m, coff·c] state (z + ape of earlier positions)
  __nv_bfloat16* entry = nullptr;       // [T, c] out: row t = the entry token t emits
  int32_t* entry_idx = nullptr;         // [T] out: j of row t, or −1 when token t closes no window
  int T = 0, m = 0, c = 0, coff = 0, rope_dim = 0;
  float eps = 1e-6f;                    // rms_norm_eps
};

// T >= 0 (0: nothing), coff ∈ {1, 2}, m >= 1, rope_dim even with 0 < rope_dim <= c. Two kernel launches, no
// allocation, no synchronisation: capturable in a CUDA graph.
void launch_compressor(const CompressorParams& p, cudaStream_t stream);

}  // namespace dsv4::cuda
