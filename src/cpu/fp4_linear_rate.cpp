// The host FP4 GEMV rate probe and its random input matrices (fp4_linear_rate.h).
#include "cpu/fp4_linear_rate.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/fp4_linear.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace dsv4 {

namespace {

constexpr int64_t kRows = 2048, kCols = 4096;  // Flash's w1/w3 [moe_intermediate_size, hidden]

// The host tier reads each layer's experts once per decode step, from DRAM. A probe that re-reads
// one 4 MiB matrix per thread runs largely from the last-level cache (16 threads × 4 MiB fit a
// server's), so each thread cycles through copies of its matrix that add up to more than any LLC.
constexpr size_t kWorkingSetBytes = size_t(1) << 30;

}  // namespace

RandomFp4Matrix random_fp4_matrix(std::mt19937_64& rng, WeightFormat f, int64_t rows, int64_t cols) {
  DSV4_CHECK(f == WeightFormat::kMXFP4 || f == WeightFormat::kNVFP4);
  const int64_t block = f == WeightFormat::kMXFP4 ? kMXFP4BlockSize : kNVFP4BlockSize;
  RandomFp4Matrix m;
  m.data.resize(size_t(rows * cols / 2));
  for (uint8_t& b : m.data) b = uint8_t(rng());
  m.scale.resize(size_t(rows * cols / block));
  for (uint8_t& b : m.scale) b = f == WeightFormat::kMXFP4 ? uint8_t(120 + rng() % 8) : uint8_t(0x30 + rng() % 16);
  m.w.name = "random FP4 matrix";
  m.w.format = f;
  m.w.rows = rows;
  m.w.cols = cols;
  m.w.data = m.data.data();
  m.w.scale = m.scale.data();
  m.w.global_scale = 1.0f;
  return m;
}

HostFp4Rate measure_host_fp4_rate(WeightFormat f, int n_threads, double seconds) {
  ThreadPool pool(n_threads);
  HostFp4Rate r;
  r.threads = pool.size();
  if (!fp4_fused_available()) return r;
  std::mt19937_64 seeds(std::random_device{}());
  const RandomFp4Matrix m = random_fp4_matrix(seeds, f, kRows, kCols);
  const size_t matrix_bytes = m.data.size() + m.scale.size();
  const size_t copies = std::max<size_t>(1, kWorkingSetBytes / (matrix_bytes * size_t(r.threads)));
  // Thread t's copies, each its data then its scales; filled by the threads themselves, so the
  // pages sit where they will be read.
  std::vector<std::vector<uint8_t>> memory(size_t(r.threads));
  pool.parallel_for(r.threads, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      memory[size_t(t)].resize(copies * matrix_bytes);
      for (size_t c = 0; c < copies; ++c) {
        uint8_t* at = memory[size_t(t)].data() + c * matrix_bytes;
        std::memcpy(at, m.data.data(), m.data.size());
        std::memcpy(at + m.data.size(), m.scale.data(), m.scale.size());
      }
    }
  });
  const auto copy = [&](int64_t t, size_t c) {
    WeightMatrix w = m.w;
    w.data = memory[size_t(t)].data() + c * matrix_bytes;
    w.scale = w.data + m.data.size();
    return w;
  };
  const double bytes_per_pass = double(matrix_bytes);
  std::vector<float> x(static_cast<size_t>(kCols));
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& v : x) v = u(rng);
  std::atomic<int64_t> passes{0};
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::duration<double>(seconds);
  pool.parallel_for(r.threads, [&](int64_t begin, int64_t end) {
    std::vector<float> y(static_cast<size_t>(kRows));
    for (int64_t t = begin; t < end; ++t) {
      size_t c = 0;
      do {
        fp4_rows_dot(copy(t, c), 0, kRows, x.data(), 1, y.data(), 0);
        passes.fetch_add(1);
        c = (c + 1) % copies;
      } while (Clock::now() < deadline);
    }
  });
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  r.weight_bytes_per_s = double(passes.load()) * bytes_per_pass / s;
  return r;
}

}  // namespace dsv4
