// How fast this host's FP4 GEMV (fp4_linear.h) streams expert weights with all its threads: the
// rate behind the host tier's expected cost per token that `dsv4 inspect` prints (issue 17).
#pragma once

#include "model/quant.h"

namespace dsv4 {

struct HostFp4Rate {
  int threads = 0;
  double weight_bytes_per_s = 0;  // packed FP4 + scale bytes read per second; 0: no fused kernel here
};

// Times one-token fp4_rows_dot calls, each thread over its own random [2048, 4096] matrix of
// format f (MXFP4 or NVFP4; Flash's w1, 4 MiB: more than a core's L2), for about `seconds`.
// n_threads <= 0: all hardware threads.
HostFp4Rate measure_host_fp4_rate(WeightFormat f, int n_threads, double seconds);

}  // namespace dsv4
