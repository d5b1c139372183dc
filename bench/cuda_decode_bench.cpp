// End-to-end CUDA forward timing for one model folder: prefill throughput and one-token decode
// latency, graph-replayed and eager (their ratio is what the graph buys), and the in-run device
// copy bandwidth for roofline arithmetic. Op-level GEMV timing is cuda_gemv_bench.cpp's.
//
// Usage: bench_cuda_decode_bench MODEL_DIR [PREFILL_TOKENS=512] [DECODE_STEPS=128]
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_forward.h"
#include "model/config.h"
#include "util/error.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Device-to-device copy bandwidth (read + write bytes / s): the HBM roofline's denominator.
double copy_bandwidth() {
  const size_t n = size_t(1) << 30;
  void *a = nullptr, *b = nullptr;
  DSV4_CUDA_CHECK(cudaMalloc(&a, n));
  DSV4_CUDA_CHECK(cudaMalloc(&b, n));
  DSV4_CUDA_CHECK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto t0 = Clock::now();
  constexpr int kReps = 10;
  for (int i = 0; i < kReps; ++i) DSV4_CUDA_CHECK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const double s = seconds_since(t0);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * double(n) * kReps / s;
}

double decode_ms(dsv4::Forward& f, const std::vector<int32_t>& prompt, int steps) {
  auto seq = f.new_sequence(int64_t(prompt.size()) + steps + 1);
  std::vector<float> logits;
  dsv4::ForwardItem item{seq.get(), prompt, false, &logits};
  f.forward(std::span<dsv4::ForwardItem>(&item, 1));
  int32_t tok = prompt.back();
  // The first step captures the graph: not timed.
  dsv4::ForwardItem one{seq.get(), std::span<const int32_t>(&tok, 1), false, &logits};
  f.forward(std::span<dsv4::ForwardItem>(&one, 1));
  const auto t0 = Clock::now();
  for (int i = 0; i < steps; ++i) f.forward(std::span<dsv4::ForwardItem>(&one, 1));
  return 1e3 * seconds_since(t0) / steps;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [PREFILL_TOKENS] [DECODE_STEPS]\n", argv[0]);
    return 2;
  }
  const int prefill = argc > 2 ? std::atoi(argv[2]) : 512;
  const int steps = argc > 3 ? std::atoi(argv[3]) : 128;
  if (prefill < 1 || steps < 1) dsv4::fail("PREFILL_TOKENS and DECODE_STEPS must be positive");
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  dsv4::CudaOptions graph_opt, eager_opt;
  graph_opt.kv_cache_tokens = eager_opt.kv_cache_tokens = 64 * 1024;  // two forwards share the card
  graph_opt.progress = eager_opt.progress = false;
  eager_opt.use_graph = false;
  auto graph = dsv4::make_cuda_forward(argv[1], graph_opt);
  const int64_t V = graph->config().vocab_size;
  std::mt19937 rng(1234);
  std::vector<int32_t> prompt(static_cast<size_t>(prefill));
  for (auto& t : prompt) t = int32_t(rng() % uint32_t(V));

  // Prefill throughput (one chunk of `prefill` tokens, logits of the last one).
  {
    auto seq = graph->new_sequence(prefill);
    std::vector<float> logits;
    dsv4::ForwardItem item{seq.get(), prompt, false, &logits};
    const auto t0 = Clock::now();
    graph->forward(std::span<dsv4::ForwardItem>(&item, 1));
    const double s = seconds_since(t0);
    std::printf("device %s\nprefill %d tokens: %.1f ms, %.0f tok/s\n", prop.name, prefill, 1e3 * s,
                prefill / s);
  }
  const double g_ms = decode_ms(*graph, prompt, steps);
  graph.reset();
  auto eager = dsv4::make_cuda_forward(argv[1], eager_opt);
  const double e_ms = decode_ms(*eager, prompt, steps);
  const double bw = copy_bandwidth();
  std::printf("decode after %d tokens: graph %.3f ms/step (%.1f tok/s), eager %.3f ms/step, "
              "graph/eager %.2fx\ncopy bandwidth %.0f GB/s\n",
              prefill, g_ms, 1e3 / g_ms, e_ms, e_ms / g_ms, bw / 1e9);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
