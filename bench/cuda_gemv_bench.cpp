// Decode GEMV benchmark: achieved bandwidth of the FP8-block, FP4-expert (MXFP4, NVFP4) and BF16
// GEMV kernels, the grouped wo_a projection (on the skinny tensor-core GEMM, 1–2,048 tokens, and at
// 2,048 through cuBLASLt as a long prompt chunk's rows run it) and the
// sparse-attention kernel at DeepSeek-V4 Flash/Pro decode shapes, as a ratio to a device-to-device copy measured in the same run (design.md "Speed
// principles"). Kernels run as CUDA-graph replays. Correctness is tests/cuda's job, not this program's.
//
// Usage: bench_cuda_gemv_bench [--quick] [--only SUBSTRING]. Prints one table; the card and date
// head the output. --only keeps the shapes whose name contains SUBSTRING (one kernel's launches,
// for a profiler's --launch-skip).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "cuda/kernels/gemv_bf16.cuh"
#include "cuda/kernels/gemv_fp8.cuh"
#include "cuda/kernels/gemv_mxfp4.cuh"
#include "cuda/kernels/grouped_out_proj.cuh"
#include "cuda/kernels/kv_cache.cuh"
#include "cuda/kernels/sparse_attention.cuh"
#include "cuda/matmul.h"
#include "cuda_bench_util.h"
#include "model/quant.h"

namespace dsv4::cuda {
namespace {

using bench::Filler;
using bench::n_copies_for;
using bench::replicated;
using bench::Timer;

struct Row {
  std::string name;
  int M, N, K;
  double us, gbps;
};

}  // namespace
}  // namespace dsv4::cuda

int main(int argc, char** argv) {
  using namespace dsv4::cuda;
  using dsv4::cat;
  const auto args = bench::parse_bench_args(argc, argv, "bench_cuda_gemv_bench");
  if (!args) return 2;
  const bool quick = args->quick;
  try {
    if (!device_available()) {
      std::fprintf(stderr, "no CUDA device\n");
      return 1;
    }
    const cudaDeviceProp prop = bench::print_card();
    const size_t l2 = size_t(prop.l2CacheSize);
    Timer timer;
    const int reps = quick ? 3 : 7, iters = quick ? 20 : 50;
    // Roofline: device-to-device copy of 1 GiB, bytes read + bytes written.
    const double copy_gbps = bench::copy_gbps(timer, reps);
    std::printf("device-to-device copy: %.1f GB/s (read + write)\n\n", copy_gbps);

    Filler fill;
    std::vector<Row> rows;

    struct Fp8Shape { const char* name; int M, N, K; };
    const std::vector<Fp8Shape> fp8_shapes = {
        {"wq_a (Flash)", 1, 1024, 4096},   {"wq_b (Flash)", 1, 32768, 1024},  {"wkv (Flash)", 1, 512, 4096},
        {"wo_b (Flash)", 1, 4096, 8192},   {"shared w1 (Flash)", 1, 2048, 4096}, {"shared w2 (Flash)", 1, 4096, 2048},
        {"indexer wq_b", 1, 8192, 1024},   {"wq_b (Pro)", 1, 65536, 1536},    {"wq_b M=2", 2, 32768, 1024},
        {"wq_b M=4", 4, 32768, 1024},      {"wq_b M=8", 8, 32768, 1024},
    };
    for (const auto& s : fp8_shapes) {
      if (!args->wants(s.name)) continue;
      const size_t wbytes = size_t(s.N) * s.K, sbytes = size_t((s.N + 127) / 128) * (s.K / 128);
      const int copies = n_copies_for(wbytes, l2);
      const auto host_w = fill.bytes(wbytes, 0, 255, true);
      const auto host_s = fill.bytes(sbytes, 118, 126, false);
      auto w = replicated(host_w.data(), wbytes, copies), ws = replicated(host_s.data(), sbytes, copies);
      DeviceBuffer<uint8_t> x(fill.bytes(size_t(s.M) * s.K, 0, 255, true)),
          xs(fill.bytes(size_t(s.M) * (s.K / 128), 120, 130, false));
      DeviceBuffer<uint16_t> y(size_t(s.M) * s.N);
      GemvFp8Params p;
      p.x = x.get();
      p.x_scale = xs.get();
      p.y = y.get();
      p.M = s.M;
      p.N = s.N;
      p.K = s.K;
      p.out_bf16 = true;
      const double t = timer.median(reps, iters, true, [&](int i, cudaStream_t st) {
        p.w = w.get() + (i % copies) * wbytes;
        p.w_scale = ws.get() + (i % copies) * sbytes;
        launch_gemv_fp8(p, st);
      });
      const double bytes = double(wbytes + sbytes + x.bytes() + xs.bytes() + y.bytes());
      rows.push_back({cat("fp8  ", s.name), s.M, s.N, s.K, t * 1e6, bytes / t * 1e-9});
    }

    struct Fp4Shape { const char* name; int n_sel, N, K, sel_per_x; ExpertWeightFormat format; };
    const std::vector<Fp4Shape> fp4_shapes = {
        {"experts w1 (Flash, 6 sel)", 6, 2048, 4096, 6, ExpertWeightFormat::kMXFP4},
        {"experts w2 (Flash, 6 sel)", 6, 4096, 2048, 1, ExpertWeightFormat::kMXFP4},
        {"experts w1 (Pro, 6 sel)", 6, 3072, 7168, 6, ExpertWeightFormat::kMXFP4},
        {"experts w2 (Pro, 6 sel)", 6, 7168, 3072, 1, ExpertWeightFormat::kMXFP4},
        {"nvfp4 experts w1 (Flash, 6 sel)", 6, 2048, 4096, 6, ExpertWeightFormat::kNVFP4},
        {"nvfp4 experts w2 (Flash, 6 sel)", 6, 4096, 2048, 1, ExpertWeightFormat::kNVFP4},
    };
    for (const auto& s : fp4_shapes) {
      if (!args->wants(s.name)) continue;
      const int n_experts = 256;  // selections spread over a full expert table
      const bool nv = s.format == ExpertWeightFormat::kNVFP4;
      const size_t ebytes = size_t(s.N) * s.K / 2, esbytes = size_t(s.N) * s.K / (nv ? 16 : 32);
      DeviceBuffer<uint8_t> w(ebytes * n_experts), ws(esbytes * n_experts);
      const auto host_w = fill.bytes(ebytes, 0, 255, false);
      // MXFP4: UE8M0 around 2^-7; NVFP4: positive E4M3 around 1 (0x30..0x40 = 0.25..2).
      const auto host_s = nv ? fill.bytes(esbytes, 0x30, 0x40, false) : fill.bytes(esbytes, 118, 124, false);
      for (int e = 0; e < n_experts; ++e) {
        DSV4_CUDA_CHECK(cudaMemcpy(w.get() + e * ebytes, host_w.data(), ebytes, cudaMemcpyHostToDevice));
        DSV4_CUDA_CHECK(cudaMemcpy(ws.get() + e * esbytes, host_s.data(), esbytes, cudaMemcpyHostToDevice));
      }
      DeviceBuffer<float> gs(std::vector<float>(size_t(n_experts), 1e-3f));
      const int n_x = (s.n_sel + s.sel_per_x - 1) / s.sel_per_x;
      DeviceBuffer<uint8_t> x(fill.bytes(size_t(n_x) * s.K, 0, 255, true)),
          xs(fill.bytes(size_t(n_x) * (s.K / 128), 120, 130, false));
      DeviceBuffer<uint16_t> y(size_t(s.n_sel) * s.N);
      // Each launch selects 6 fresh experts (rotating through the table): DRAM reads every time.
      const int n_rounds = n_experts / s.n_sel;
      std::vector<int32_t> sel(size_t(n_rounds) * s.n_sel);
      for (size_t i = 0; i < sel.size(); ++i) sel[i] = int32_t(i % n_experts);
      DeviceBuffer<int32_t> d_sel(sel);
      GemvMxfp4Params p;
      p.w = w.get();
      p.w_scale = ws.get();
      p.global_scale = nv ? gs.get() : nullptr;
      p.format = s.format;
      p.x = x.get();
      p.x_scale = xs.get();
      p.sel_per_x = s.sel_per_x;
      p.y = y.get();
      p.n_sel = s.n_sel;
      p.n_experts = n_experts;
      p.N = s.N;
      p.K = s.K;
      p.out_bf16 = true;
      const double t = timer.median(reps, iters, true, [&](int i, cudaStream_t st) {
        p.expert_idx = d_sel.get() + (i % n_rounds) * s.n_sel;
        launch_gemv_mxfp4(p, st);
      });
      const double bytes = double(s.n_sel) * double(ebytes + esbytes) + double(x.bytes() + xs.bytes() + y.bytes());
      rows.push_back({cat("fp4  ", s.name), s.n_sel, s.N, s.K, t * 1e6, bytes / t * 1e-9});
    }

    // Grouped output projection wo_a (§4.5): one weight pass serves T tokens; N = G·R. "lt": a long
    // prompt chunk's path (matmul.h grouped_out_proj_lt), the same product through cuBLASLt.
    struct GroupedShape { const char* name; int T, G, R, K; bool fp8; bool lt = false; };
    const std::vector<GroupedShape> grouped_shapes = {
        {"wo_a (Flash)", 1, 8, 1024, 4096, true},
        {"wo_a (Pro)", 1, 16, 1024, 4096, true},
        {"wo_a bf16 (Flash)", 1, 8, 1024, 4096, false},
        {"wo_a (Flash) T=8", 8, 8, 1024, 4096, true},
        {"wo_a (Flash) T=64", 64, 8, 1024, 4096, true},
        {"wo_a (Flash) T=128", 128, 8, 1024, 4096, true},
        {"wo_a (Flash) T=2048", 2048, 8, 1024, 4096, true},
        {"wo_a (Flash) T=2048 lt", 2048, 8, 1024, 4096, true, true},
    };
    for (const auto& s : grouped_shapes) {
      if (!args->wants(s.name)) continue;
      const size_t n_rows = size_t(s.G) * s.R, esize = s.fp8 ? 1 : 2;
      const size_t wbytes = n_rows * s.K * esize, sbytes = s.fp8 ? (n_rows + 127) / 128 * (s.K / 128) : 0;
      const int copies = n_copies_for(wbytes, l2);
      const auto host_w = s.fp8 ? fill.bytes(wbytes, 0, 255, true) : std::vector<uint8_t>();
      std::vector<uint16_t> host_w16(s.fp8 ? 0 : n_rows * s.K);
      for (auto& v : host_w16) v = uint16_t(0x3c00 | (fill.next() & 0x83ff));
      const void* src = s.fp8 ? static_cast<const void*>(host_w.data()) : static_cast<const void*>(host_w16.data());
      const auto host_s = fill.bytes(std::max<size_t>(sbytes, 1), 118, 126, false);
      auto w = replicated(src, wbytes, copies), ws = replicated(host_s.data(), sbytes, copies);
      std::vector<uint16_t> ho(size_t(s.T) * s.G * s.K);
      for (auto& v : ho) v = uint16_t(0x3c00 | (fill.next() & 0x83ff));
      DeviceBuffer<uint16_t> o(ho), z(size_t(s.T) * n_rows), w_group(size_t(s.R) * s.K);
      GroupedOutProjParams p;
      p.o = reinterpret_cast<const __nv_bfloat16*>(o.get());
      p.z = reinterpret_cast<__nv_bfloat16*>(z.get());
      p.T = s.T;
      p.G = s.G;
      p.R = s.R;
      p.K = s.K;
      bool lt_refused = false;  // then the skinny kernel ran, and the row says so
      const double t = timer.median(reps, iters, true, [&](int i, cudaStream_t st) {
        if (s.fp8) {
          p.w_fp8 = w.get() + (i % copies) * wbytes;
          p.w_scale = ws.get() + (i % copies) * sbytes;
        } else {
          p.w_bf16 = reinterpret_cast<const __nv_bfloat16*>(w.get() + (i % copies) * wbytes);
        }
        if (!s.lt || !grouped_out_proj_lt(p, reinterpret_cast<__nv_bfloat16*>(w_group.get()), st)) {
          lt_refused = lt_refused || s.lt;
          launch_grouped_out_proj(p, st);
        }
      });
      const double bytes = double(wbytes + sbytes + o.bytes() + z.bytes());
      rows.push_back({cat(s.fp8 ? "fp8  " : "bf16 ", s.name, lt_refused ? " (refused: skinny)" : ""), s.T, int(n_rows),
                      s.K, t * 1e6, bytes / t * 1e-9});
    }

    struct Bf16Shape { const char* name; int M, N, K; };
    const std::vector<Bf16Shape> bf16_shapes = {
        {"router gate (Flash)", 1, 256, 4096},
        {"compressor wkv (CSA)", 1, 1024, 4096},
        {"head (Flash)", 1, 129280, 4096},
    };
    for (const auto& s : bf16_shapes) {
      if (!args->wants(s.name)) continue;
      const size_t wbytes = size_t(s.N) * s.K * 2;
      const int copies = n_copies_for(wbytes, l2);
      const auto host_w = fill.bytes(wbytes, 0, 255, false);
      auto w = replicated(host_w.data(), wbytes, copies);
      // BF16 activations with small exponents: random bytes in the high half avoid NaN/inf.
      std::vector<uint16_t> hx(size_t(s.M) * s.K);
      for (auto& v : hx) v = uint16_t(0x3c00 | (fill.next() & 0x83ff));
      DeviceBuffer<uint16_t> x(hx);
      DeviceBuffer<float> y(size_t(s.M) * s.N);
      GemvBf16Params p;
      p.x = reinterpret_cast<const __nv_bfloat16*>(x.get());
      p.y = y.get();
      p.M = s.M;
      p.N = s.N;
      p.K = s.K;
      const double t = timer.median(reps, iters, true, [&](int i, cudaStream_t st) {
        p.w = reinterpret_cast<const __nv_bfloat16*>(w.get() + size_t(i % copies) * wbytes);
        launch_gemv_bf16(p, st);
      });
      const double bytes = double(wbytes + x.bytes() + y.bytes());
      rows.push_back({cat("bf16 ", s.name), s.M, s.N, s.K, t * 1e6, bytes / t * 1e-9});
    }
    // Sparse attention (split-key cluster kernel): n_q decode queries, H heads over 128 window +
    // top-k rows of a large cache (CSA), or the window + every entry of a 1M-token HCA layer; the
    // 64-query rows are a batch-64 decode step's CSA, HCA and sliding-window layers at ctx 4K.
    // Bytes = the listed rows read once per query + q + out (the roofline view; the kernel is
    // latency-bound at these sizes, so the time is the figure to watch).
    struct AttnShape { const char* name; int n_q, H, n_idx; };
    for (const auto& s : std::vector<AttnShape>{{"attention Flash CSA decode", 1, 64, 640},
                                                {"attention Pro CSA decode", 1, 128, 1152},
                                                {"attention Flash CSA 4 queries", 4, 64, 640},
                                                {"attention Flash CSA 64 queries", 64, 64, 640},
                                                {"attention Flash HCA 64 queries", 64, 64, 128 + 4096 / 128},
                                                {"attention Flash sliding 64 queries", 64, 64, 128},
                                                {"attention Flash HCA 1M decode", 1, 64, 128 + (1 << 20) / 128}}) {
      if (!args->wants(s.name)) continue;
      const int block_size = 64, n_rows = 1 << 16, n_pages = n_rows / block_size;
      DeviceBuffer<uint8_t> cache(size_t(kv_page_bytes(block_size, kKvDimV4)) * n_pages);
      std::vector<uint16_t> hkv(size_t(n_rows) * kKvDimV4);
      for (auto& v : hkv) v = uint16_t(0x3c00 | (fill.next() & 0x83ff));
      std::vector<int32_t> slots(static_cast<size_t>(n_rows));
      for (int i = 0; i < n_rows; ++i) slots[size_t(i)] = i;
      DeviceBuffer<uint16_t> kv(hkv), q(std::vector<uint16_t>(hkv.begin(), hkv.begin() + size_t(s.n_q) * s.H * kKvDimV4)),
          out(size_t(s.n_q) * s.H * kKvDimV4);
      DeviceBuffer<int32_t> d_slots(slots);
      KvPackParams kp;
      kp.kv = reinterpret_cast<const __nv_bfloat16*>(kv.get());
      kp.slot = d_slots.get();
      kp.cache = cache.get();
      kp.n_tokens = n_rows;
      kp.block_size = block_size;
      kp.dim = kKvDimV4;
      launch_kv_pack(kp, nullptr);
      std::vector<int32_t> idx(size_t(s.n_q) * s.n_idx);
      for (auto& v : idx) v = int32_t(fill.next() % uint64_t(n_rows));
      DeviceBuffer<int32_t> d_idx(idx), pos(std::vector<int32_t>(size_t(s.n_q), 123456));
      DeviceBuffer<float> sink(std::vector<float>(size_t(s.H), 0.5f)), freq(std::vector<float>(32, 1e-3f));
      SparseAttnParams p;
      p.q = reinterpret_cast<const __nv_bfloat16*>(q.get());
      p.cache = cache.get();
      p.indices = d_idx.get();
      p.sink = sink.get();
      p.pos = pos.get();
      p.inv_freq = freq.get();
      p.out = reinterpret_cast<__nv_bfloat16*>(out.get());
      p.n_q = s.n_q;
      p.H = s.H;
      p.n_idx = s.n_idx;
      p.block_size = block_size;
      p.dim = kKvDimV4;
      p.softmax_scale = 1.0f / 22.627417f;
      const double t = timer.median(reps, iters, true, [&](int, cudaStream_t st) { launch_sparse_attention(p, st); });
      const double bytes =
          double(s.n_q) * s.n_idx * (kv_row_data_bytes(kKvDimV4) + kv_row_scale_bytes(kKvDimV4)) + 2.0 * q.bytes();
      rows.push_back({cat("attn ", s.name), s.n_q, s.H, s.n_idx, t * 1e6, bytes / t * 1e-9});
    }
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());

    std::printf("%-36s %3s %7s %6s %10s %9s %8s\n", "kernel / shape", "M", "N", "K", "time_us", "GB/s", "of_copy");
    for (const auto& r : rows)
      std::printf("%-36s %3d %7d %6d %10.2f %9.1f %7.1f%%\n", r.name.c_str(), r.M, r.N, r.K, r.us, r.gbps,
                  100 * r.gbps / copy_gbps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_gemv_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
