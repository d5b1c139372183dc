// How fast this host's FP4 GEMV (fp4_linear.h) streams expert weights with all its threads: the
// rate behind the host tier's expected cost per token that `dsv4 inspect` prints (issue 17).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "model/quant.h"

namespace dsv4 {

// A random MXFP4 / NVFP4 matrix [rows, cols] with finite scales (UE8M0 near 2^0, small E4M3):
// timing input for this probe and bench/cpu_fp4_linear_bench.cpp, not a numerics fixture
// (tests/cpu/test_fp4_linear.cpp covers every nibble and subnormal scales on purpose). `w` views
// the vectors: move the struct, do not copy it.
struct RandomFp4Matrix {
  std::vector<uint8_t> data, scale;
  WeightMatrix w;
};
RandomFp4Matrix random_fp4_matrix(std::mt19937_64& rng, WeightFormat f, int64_t rows, int64_t cols);

struct HostFp4Rate {
  int threads = 0;
  double weight_bytes_per_s = 0;  // packed FP4 + scale bytes read per second; 0: no fused kernel here
};

// Times one-token fp4_rows_dot calls, each thread cycling over its own copies of a random
// [2048, 4096] matrix of format f (MXFP4 or NVFP4; Flash's w1, 4 MiB), 1 GiB in all, so that the
// weights stream from DRAM as the host tier's do, for about `seconds` (plus the copies' filling).
// n_threads <= 0: all hardware threads.
HostFp4Rate measure_host_fp4_rate(WeightFormat f, int n_threads, double seconds);

}  // namespace dsv4
