#include "cpu/fp4_linear_rate.h"

#include <atomic>
#include <chrono>
#include <random>
#include <vector>

#include "cpu/fp4_linear.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace dsv4 {

namespace {

constexpr int64_t kRows = 2048, kCols = 4096;  // Flash's w1/w3 [moe_intermediate_size, hidden]

struct RandomFp4 {
  std::vector<uint8_t> data, scale;
  WeightMatrix w;
};

RandomFp4 random_fp4(WeightFormat f, uint64_t seed) {
  DSV4_CHECK(f == WeightFormat::kMXFP4 || f == WeightFormat::kNVFP4);
  std::mt19937_64 rng(seed);
  RandomFp4 m;
  m.data.resize(size_t(kRows * kCols / 2));
  for (uint8_t& b : m.data) b = uint8_t(rng());
  const int64_t block = f == WeightFormat::kMXFP4 ? kMXFP4BlockSize : kNVFP4BlockSize;
  m.scale.resize(size_t(kRows * kCols / block));
  // Finite scales: UE8M0 near 2^0 (never the NaN byte), small positive E4M3 values.
  for (uint8_t& b : m.scale) b = f == WeightFormat::kMXFP4 ? uint8_t(120 + rng() % 8) : uint8_t(0x30 + rng() % 16);
  m.w.name = "host FP4 rate probe";
  m.w.format = f;
  m.w.rows = kRows;
  m.w.cols = kCols;
  m.w.data = m.data.data();
  m.w.scale = m.scale.data();
  m.w.global_scale = 1.0f;
  return m;
}

}  // namespace

HostFp4Rate measure_host_fp4_rate(WeightFormat f, int n_threads, double seconds) {
  ThreadPool pool(n_threads);
  HostFp4Rate r;
  r.threads = pool.size();
  if (!fp4_fused_available()) return r;
  std::vector<RandomFp4> mats;
  for (int t = 0; t < r.threads; ++t) mats.push_back(random_fp4(f, std::random_device{}()));
  const double bytes_per_pass = double(mats[0].data.size() + mats[0].scale.size());
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
      do {
        fp4_rows_dot(mats[size_t(t)].w, 0, kRows, x.data(), 1, y.data(), 0);
        passes.fetch_add(1);
      } while (Clock::now() < deadline);
    }
  });
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  r.weight_bytes_per_s = double(passes.load()) * bytes_per_pass / s;
  return r;
}

}  // namespace dsv4
