// Whether the host tier's pinned memory slows the host's cores. run_expert_rows (cpu/expert_units.h)
// over Flash-shaped MXFP4 experts laid out as HostExperts lays them (one block per layer, each
// expert's w1, w3, w2 with their scales), the blocks placed three ways:
//   - pageable: aligned_alloc (2 MiB pages only where the kernel's THP policy is `always`);
//   - pinned: cudaHostAlloc, mapped (what HostExperts uses: small pages);
//   - pinned huge: mmap, madvise(MADV_HUGEPAGE), touched, then cudaHostRegister, mapped.
// Why: on H100 hosts the tier's cores read ≈ 52 GB/s of expert weights at batch 1 while inspect's
// FP4 GEMV probe, on pageable memory, measured 76–90 GB/s on the same hosts
// (bench/results/2026-12-06-h100-host-tier-split.md). A hardware prefetcher stops at each 4 KiB
// page and every page costs a TLB walk; if that is the gap, huge pinned pages close it.
// Shapes per layer: 3 experts of 1 row (an H100's batch 1 at 0.97: 3.3 host picks per layer), 13 of
// 1–2 rows (batch 16). Rounds interleave the placements; the best round is printed. Also prints the
// THP policy and AnonHugePages (how much anonymous memory huge pages back).
// Usage: bench_cuda_host_pages_bench [LAYERS=24] [THREADS=all]
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "cpu/context.h"
#include "cpu/expert_units.h"
#include "cpu/fp4_linear.h"
#include "cpu/fp4_linear_rate.h"
#include "cpu/moe.h"
#include "cuda/cuda_check.h"
#include "random_expert_rows.h"

namespace {

using namespace dsv4;
using Clock = std::chrono::steady_clock;

constexpr int64_t kD = 4096, kI = 2048;  // Flash hidden_size, moe_intermediate_size
constexpr int kMaxExperts = 13;          // per layer, the batch-16 shape
constexpr size_t kHugePage = size_t(2) << 20;

enum class Placement { kPageable, kPinned, kPinnedHuge };
const char* to_string(Placement p) {
  return p == Placement::kPageable ? "pageable" : p == Placement::kPinned ? "pinned (cudaHostAlloc)" : "pinned huge";
}

// One layer's block of kMaxExperts experts, and the experts' views into it.
struct Layer {
  uint8_t* block = nullptr;
  size_t bytes = 0;
  Placement placement;
  std::vector<ExpertWeights> experts;
};

size_t padded(size_t n) { return (n + 63) / 64 * 64; }

Layer make_layer(Placement p, const std::vector<RandomFp4Matrix>& src) {
  Layer l;
  l.placement = p;
  for (int e = 0; e < kMaxExperts; ++e)
    for (int k = 0; k < 3; ++k) {
      const RandomFp4Matrix& m = src[size_t(3 * e + k) % src.size()];
      l.bytes += padded(m.data.size()) + padded(m.scale.size());
    }
  l.bytes = (l.bytes + kHugePage - 1) / kHugePage * kHugePage;
  switch (p) {
    case Placement::kPageable:
      l.block = static_cast<uint8_t*>(std::aligned_alloc(kHugePage, l.bytes));
      DSV4_CHECK(l.block);
      break;
    case Placement::kPinned:
      DSV4_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&l.block), l.bytes, cudaHostAllocMapped));
      break;
    case Placement::kPinnedHuge: {
      void* m = mmap(nullptr, l.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      DSV4_CHECK(m != MAP_FAILED);
      madvise(m, l.bytes, MADV_HUGEPAGE);  // a hint: the THP policy `never` ignores it
      std::memset(m, 0, l.bytes);          // fault the pages in (huge where granted) before pinning
      DSV4_CUDA_CHECK(cudaHostRegister(m, l.bytes, cudaHostRegisterMapped));
      l.block = static_cast<uint8_t*>(m);
      break;
    }
  }
  size_t at = 0;
  const auto place = [&](const std::vector<uint8_t>& bytes) {
    std::memcpy(l.block + at, bytes.data(), bytes.size());
    const uint8_t* where = l.block + at;
    at += padded(bytes.size());
    return where;
  };
  for (int e = 0; e < kMaxExperts; ++e) {
    ExpertWeights w;
    WeightMatrix* mats[3] = {&w.w1, &w.w3, &w.w2};
    for (int k = 0; k < 3; ++k) {
      const RandomFp4Matrix& m = src[size_t(3 * e + k) % src.size()];
      *mats[k] = m.w;
      mats[k]->data = place(m.data);
      mats[k]->scale = place(m.scale);
    }
    l.experts.push_back(w);
  }
  return l;
}

void free_layer(Layer& l) {
  switch (l.placement) {
    case Placement::kPageable: std::free(l.block); break;
    case Placement::kPinned: cudaFreeHost(l.block); break;
    case Placement::kPinnedHuge:
      cudaHostUnregister(l.block);
      munmap(l.block, l.bytes);
      break;
  }
}

// Seconds of run_expert_rows over every layer, the first `rows.size()` experts of each.
double one_step(const CpuContext& ctx, const std::vector<Layer>& layers, const std::vector<int>& rows,
                std::mt19937& rng) {
  double busy = 0;
  for (const Layer& l : layers) {
    std::vector<ExpertRows> work = random_expert_rows(ctx, l.experts, rows, rng);
    const auto t0 = Clock::now();
    run_expert_rows(ctx, work);
    busy += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  return busy;
}

std::string first_line(const char* path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s.empty() ? "(unreadable)" : s;
}

std::string anon_huge_pages() {
  std::ifstream f("/proc/meminfo");
  for (std::string s; std::getline(f, s);)
    if (s.rfind("AnonHugePages:", 0) == 0) return s;
  return "AnonHugePages: (unreadable)";
}

}  // namespace

int main(int argc, char** argv) {
  const int n_layers = argc > 1 ? std::atoi(argv[1]) : 24;
  ThreadPool pool(argc > 2 ? std::atoi(argv[2]) : 0);
  if (!cuda::device_available()) {
    std::fprintf(stderr, "bench_cuda_host_pages_bench: no CUDA device (pinning needs the driver)\n");
    return 1;
  }
  ModelConfig cfg;
  cfg.swiglu_limit = 10.0;
  const CpuContext ctx{cfg, NumericsPoints::from(Numerics::kOfficialBf16), pool};
  std::printf("fused FP4 kernel: %s; %d threads; %d layers of %d Flash experts per placement\n",
              to_string(fp4_best_kernel()), pool.size(), n_layers, kMaxExperts);
  std::printf("THP: enabled %s, defrag %s; before: %s\n",
              first_line("/sys/kernel/mm/transparent_hugepage/enabled").c_str(),
              first_line("/sys/kernel/mm/transparent_hugepage/defrag").c_str(), anon_huge_pages().c_str());
  // Four distinct experts' matrices, copied round-robin: the bytes do not matter, their addresses do
  // (every layer's block is its own memory, so each step streams them cold from DRAM).
  std::mt19937_64 bytes(std::random_device{}());
  std::vector<RandomFp4Matrix> src;
  for (int e = 0; e < 4; ++e) {
    src.push_back(random_fp4_matrix(bytes, WeightFormat::kMXFP4, kI, kD));
    src.push_back(random_fp4_matrix(bytes, WeightFormat::kMXFP4, kI, kD));
    src.push_back(random_fp4_matrix(bytes, WeightFormat::kMXFP4, kD, kI));
  }
  const Placement placements[] = {Placement::kPageable, Placement::kPinned, Placement::kPinnedHuge};
  std::vector<std::vector<Layer>> layers;
  for (Placement p : placements) {
    layers.emplace_back();
    for (int i = 0; i < n_layers; ++i) layers.back().push_back(make_layer(p, src));
  }
  std::printf("after placing them: %s\n", anon_huge_pages().c_str());
  const double expert_bytes = double(src[0].data.size() + src[0].scale.size() + src[1].data.size() +
                                     src[1].scale.size() + src[2].data.size() + src[2].scale.size());
  struct Shape {
    const char* name;
    std::vector<int> rows;
  };
  const Shape shapes[] = {{"batch 1 (3 experts x 1 row)", {1, 1, 1}},
                          {"batch 16 (13 experts x 1-2 rows)", {2, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1}}};
  std::mt19937 rng(std::random_device{}());
  for (const Shape& shape : shapes) {
    std::vector<double> best(std::size(placements), 1e30);
    for (int round = 0; round < 4; ++round)
      for (size_t p = 0; p < std::size(placements); ++p)
        best[p] = std::min(best[p], one_step(ctx, layers[p], shape.rows, rng));
    int64_t rows = 0;
    for (int r : shape.rows) rows += r;
    const double step_bytes = expert_bytes * double(shape.rows.size()) * n_layers;
    for (size_t p = 0; p < std::size(placements); ++p)
      std::printf("%-34s %-24s %7.3f ms per layer, %6.1f GB/s of weights, %.3f ms per expert (%lld rows)\n",
                  shape.name, to_string(placements[p]), best[p] / n_layers * 1e3, step_bytes / best[p] / 1e9,
                  best[p] / n_layers / double(shape.rows.size()) * 1e3, (long long)rows);
  }
  for (auto& per_placement : layers)
    for (Layer& l : per_placement) free_layer(l);
  return 0;
}
