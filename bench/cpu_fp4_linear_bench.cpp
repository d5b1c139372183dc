// The host FP4 expert GEMV (cpu/fp4_linear.h) on Flash's routed-expert shape, w1/w3 [2048, 4096]
// in MXFP4 and NVFP4, for 1, 4, 16 and 64 activation rows:
//   - one core: the fused kernel (its AVX-512 build where the host has it, and its AVX2 build)
//     against the path it replaced (expand 16 rows with the scalar dequantiser, then the 16-lane
//     dot), as ratios measured in the same run;
//   - every core: linear_rows (which dispatches to the fused kernel) in weight GB/s, against this
//     host's read bandwidth measured in the same run (a threaded sum over 1 GiB).
// Prints the CPU and thread count. Correctness is tests/cpu/test_fp4_linear.cpp.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cpu/context.h"
#include "cpu/fp4_linear.h"
#include "cpu/fp4_linear_rate.h"
#include "cpu/linear.h"

namespace {

using namespace dsv4;
using Clock = std::chrono::steady_clock;

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// Best of `reps` timings of fn, in seconds (best: the question is what the code can do, not the noise).
template <class F>
double best_seconds(int reps, F&& fn) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

double read_bandwidth_gbs(ThreadPool& pool) {
  const size_t n = (size_t(1) << 30) / sizeof(float);
  std::vector<float> buf(n, 1.0f);
  std::vector<double> partial(size_t(pool.size()) * 8);
  volatile double sink = 0.0;
  const double s = best_seconds(5, [&] {
    pool.parallel_for(int64_t(pool.size()), [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) {
        const size_t lo = n * size_t(p) / size_t(pool.size()), hi = n * size_t(p + 1) / size_t(pool.size());
        float acc[16] = {};
        for (size_t i = lo; i + 16 <= hi; i += 16)
          for (int l = 0; l < 16; ++l) acc[l] += buf[i + size_t(l)];
        double sum = 0.0;
        for (float a : acc) sum += a;
        partial[size_t(p) * 8] = sum;
      }
    });
    for (size_t p = 0; p < size_t(pool.size()); ++p) sink = sink + partial[p * 8];
  });
  return double(n * sizeof(float)) / s / 1e9;
}

// The replaced path on one core: expand 16 rows, then the 16-lane dot per token.
void expanded_rows(const WeightMatrix& w, const float* x, int64_t n, float* y) {
  const int64_t K = w.cols;
  std::vector<float> tile(size_t(16 * K));
  for (int64_t r = 0; r < w.rows; r += 16) {
    const int64_t nr = std::min<int64_t>(16, w.rows - r);
    w.dequant_rows(r, nr, tile.data());
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < nr; ++i) {
        float acc[16] = {};
        const float* a = x + t * K;
        const float* b = tile.data() + i * K;
        for (int64_t k = 0; k < K; k += 16)
          for (int l = 0; l < 16; ++l) acc[l] += a[k + l] * b[k + l];
        float s = 0.0f;
        for (float v : acc) s += v;
        y[t * w.rows + r + i] = s;
      }
  }
}

}  // namespace

int main() {
  if (!fp4_fused_available()) {
    std::printf("this host has no AVX2: the fused FP4 kernel does not run here\n");
    return 1;
  }
  constexpr int64_t kRows = 2048, kCols = 4096;  // Flash w1/w3: [moe_intermediate_size, hidden_size]
  ThreadPool pool(0);
  const double bw = read_bandwidth_gbs(pool);
  std::printf("%s, %d threads; read bandwidth %.1f GB/s (threaded sum over 1 GiB)\n", cpu_name().c_str(),
              pool.size(), bw);
  const Fp4Kernel best = fp4_best_kernel();
  std::printf("fused kernel: %s\n", to_string(best));
  std::printf("%-6s %5s | %12s %12s %12s %7s %7s | %14s %9s\n", "format", "rows", "1-core fused", "1-core avx2",
              "expanded", "vs avx2", "vs exp.", "all-core GB/s", "of read");
  std::mt19937_64 rng(std::random_device{}());
  ModelConfig cfg;
  const CpuContext ctx{cfg, NumericsPoints::from(Numerics::kExact), pool};
  for (WeightFormat f : {WeightFormat::kMXFP4, WeightFormat::kNVFP4}) {
    const RandomFp4Matrix m = random_fp4_matrix(rng, f, kRows, kCols);
    const double weight_bytes = double(m.data.size() + m.scale.size());
    for (int64_t n : {1, 4, 16, 64}) {
      std::vector<float> x(size_t(n * kCols)), y(size_t(n * kRows));
      std::normal_distribution<float> normal;
      for (float& v : x) v = normal(rng);
      const int reps = n >= 16 ? 3 : 10;
      const double fused = best_seconds(reps, [&] { fp4_rows_dot(m.w, 0, kRows, x.data(), n, y.data(), kRows); });
      const double avx2 = best_seconds(
          reps, [&] { fp4_rows_dot(m.w, 0, kRows, x.data(), n, y.data(), kRows, Fp4Kernel::kAvx2); });
      const double expanded = best_seconds(reps, [&] { expanded_rows(m.w, x.data(), n, y.data()); });
      const double all = best_seconds(reps * 3, [&] { linear(ctx, x.data(), n, m.w, y.data()); });
      const double gbs = weight_bytes / all / 1e9;
      std::printf("%-6s %5lld | %9.2f ms %9.2f ms %9.2f ms %6.1fx %6.1fx | %14.1f %8.1f%%\n", to_string(f),
                  (long long)n, fused * 1e3, avx2 * 1e3, expanded * 1e3, avx2 / fused, expanded / fused, gbs,
                  100.0 * gbs / bw);
    }
  }
  return 0;
}
