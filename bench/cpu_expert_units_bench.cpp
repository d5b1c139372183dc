// The host tier's decode work without a GPU: run_expert_rows (cpu/expert_units.h) over Flash-shaped
// MXFP4 experts ([2048, 4096] w1/w3, [4096, 2048] w2), layer after layer, each layer its own
// experts (so they stream from memory, as 22 GiB of host experts do), with an idle gap after each
// layer where a decode step's GPU part would run. Two shapes:
//   - batch 1: one expert of one row per layer (a decode row brings 0.9 host experts per layer);
//   - batch 16: 13 experts of one or two rows per layer (16 rows × 6 picks × 42/256).
// Prints the kernel (DSV4_FP4_KERNEL picks one), the host's time per layer without the gaps, and
// its weight GB/s, for gaps of 0 and 450 µs (the H200's GPU part per layer at batch 1, 2026-12-03):
// whether short bursts after idle time run slower than back-to-back work, and by how much.
// Usage: bench_cpu_expert_units_bench [LAYERS=16] [THREADS=all]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "cpu/context.h"
#include "cpu/expert_units.h"
#include "cpu/fp4_linear.h"
#include "cpu/fp4_linear_rate.h"
#include "cpu/moe.h"
#include "random_expert_rows.h"

namespace {

using namespace dsv4;
using Clock = std::chrono::steady_clock;

constexpr int64_t kD = 4096, kI = 2048;  // Flash hidden_size, moe_intermediate_size

struct Layer {
  std::vector<RandomFp4Matrix> mats;  // w1, w3, w2 per expert
  std::vector<ExpertWeights> experts;
};

Layer make_layer(std::mt19937_64& rng, int n_experts) {
  Layer l;
  for (int e = 0; e < n_experts; ++e) {
    l.mats.push_back(random_fp4_matrix(rng, WeightFormat::kMXFP4, kI, kD));
    l.mats.push_back(random_fp4_matrix(rng, WeightFormat::kMXFP4, kI, kD));
    l.mats.push_back(random_fp4_matrix(rng, WeightFormat::kMXFP4, kD, kI));
  }
  for (int e = 0; e < n_experts; ++e)
    l.experts.push_back({l.mats[size_t(3 * e)].w, l.mats[size_t(3 * e + 1)].w, l.mats[size_t(3 * e + 2)].w});
  return l;
}

double weight_bytes(const Layer& l) {
  double b = 0;
  for (const RandomFp4Matrix& m : l.mats) b += double(m.data.size() + m.scale.size());
  return b;
}

// Seconds of host work over every layer, `steps` times (best step), with `gap` idle after each layer.
double run_steps(const CpuContext& ctx, std::vector<Layer>& layers, const std::vector<int>& rows_per_expert,
                 std::chrono::microseconds gap, int steps, std::mt19937& rng) {
  double best = 1e30;
  for (int s = 0; s < steps; ++s) {
    double busy = 0;
    for (Layer& l : layers) {
      std::vector<ExpertRows> work = random_expert_rows(ctx, l.experts, rows_per_expert, rng);
      const auto t0 = Clock::now();
      run_expert_rows(ctx, work);
      busy += std::chrono::duration<double>(Clock::now() - t0).count();
      if (gap.count() > 0) std::this_thread::sleep_for(gap);
    }
    best = std::min(best, busy);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int n_layers = argc > 1 ? std::atoi(argv[1]) : 16;
  ThreadPool pool(argc > 2 ? std::atoi(argv[2]) : 0);
  ModelConfig cfg;
  cfg.swiglu_limit = 10.0;
  const CpuContext ctx{cfg, NumericsPoints::from(Numerics::kOfficialBf16), pool};
  std::printf("fused FP4 kernel: %s; %d threads; %d layers\n", to_string(fp4_best_kernel()), pool.size(), n_layers);
  std::mt19937_64 bytes(std::random_device{}());
  std::mt19937 rng(std::random_device{}());
  struct Shape {
    const char* name;
    std::vector<int> rows_per_expert;
  };
  const Shape shapes[] = {{"batch 1 (1 expert x 1 row)", {1}},
                          {"batch 16 (13 experts x 1-2 rows)", {2, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1}}};
  for (const Shape& shape : shapes) {
    std::vector<Layer> layers;
    for (int i = 0; i < n_layers; ++i) layers.push_back(make_layer(bytes, int(shape.rows_per_expert.size())));
    const double bytes_per_step = weight_bytes(layers.front()) * n_layers;
    for (int gap_us : {0, 450}) {
      const double s = run_steps(ctx, layers, shape.rows_per_expert, std::chrono::microseconds(gap_us), 3, rng);
      std::printf("%-34s gap %3d us: %7.3f ms per layer, %5.1f GB/s of weights\n", shape.name, gap_us,
                  s / n_layers * 1e3, bytes_per_step / s / 1e9);
    }
  }
  return 0;
}
