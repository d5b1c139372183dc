// The 128-byte swizzle of a K-major tensor-core operand in shared memory (PTX ISA "Shared Memory
// Matrix Layout", swizzle mode 128B), as the wgmma kernels stage their tiles: rows of 128 bytes,
// 16-byte chunk c of row r stored at chunk c ^ (r % 8), so that the 8 rows of an atom put each
// chunk index in 8 distinct bank groups. Host and device (tests/cuda/moe_grouped_gemm.cpp checks
// the permutation).
#pragma once

#include <cuda_runtime_api.h>

namespace dsv4::cuda {

// Byte offset of chunk c (16 bytes) of row r of a tile of 128-byte rows.
__host__ __device__ constexpr int swizzled_chunk(int r, int c) { return r * 128 + ((c ^ (r & 7)) << 4); }

}  // namespace dsv4::cuda
