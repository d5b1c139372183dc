// Routed-MoE benchmark: one Flash-shaped layer's routed experts (E = 256, D = 4096, I = 2048,
// k = 6, MXFP4 or NVFP4) through moe_routed — dispatch plan, grouped w1/w3, SwiGLU + FP8,
// grouped w2, combine — at decode batches 1/8/64/128 (uniform random routing; experts touched
// counted) and prefill 2K/8K rows, against a device-to-device copy and an FP8 GEMM at 8192³ timed
// in the same run (design.md "Speed principles"); the old per-selection GEMV path beside it for
// decode. Kernels run as CUDA-graph replays; successive replays use different routings so that
// the L2 does not keep the previous step's experts. Correctness is tests/cuda's job.
//
// Usage: bench_cuda_moe_bench [--quick] [--nvfp4] [--fp8-prefill | --fp8-all] [--rows T]. The card
// and date head the output. --fp8-prefill: the cases whose T rows, as one prompt chunk, take the
// FP8 wgmma kernel (moe_step.cpp's rule: a prefill-shaped launch by themselves) run there
// (MoeGroupedParams::fp8_rows); decode cases are unchanged. --fp8-all: every MXFP4 case on the
// FP8 kernel, decode cases in its 8-row items (CudaOptions::fp8_expert_decode); it includes
// --fp8-prefill's cases. NVFP4 cases never take the FP8 kernel.
// --rows T runs only the case of T rows (a profiler's run: `ncu -k regex:grouped_fp4 -c 2` then
// sees that case's first eager launches, w1/w3 and w2).
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cuda_bench_util.h"
#include "cuda/cuda_check.h"
#include "cuda/device_arena.h"
#include "cuda/device_buffer.h"
#include "cuda/device_model.h"
#include "cuda/kernels/gemv_mxfp4.cuh"
#include "cuda/kernels/moe_combine.cuh"
#include "cuda/kernels/moe_grouped_gemm.cuh"
#include "cuda/kernels/swiglu.cuh"
#include "cuda/moe_step.h"
#include "model/config.h"
#include "model/quant.h"

namespace dsv4::cuda {
namespace {

constexpr int kE = 256, kD = 4096, kI = 2048, kK = 6;  // Flash (architecture.md notation table)

using bench::Filler;

// One tensor of the layer's experts [E, N, K]: 8 distinct random experts replicated over E
// (3 GiB of host randomness would dominate the run; the L2 cannot tell), realistic scales.
DeviceExperts make_experts(Filler& fill, bool nv, int N, int K) {
  DeviceExperts d;
  d.format = nv ? DeviceExperts::Format::kNVFP4 : DeviceExperts::Format::kMXFP4;
  d.E = kE;
  d.N = N;
  d.K = K;
  const size_t per = size_t(N) * K / 2, scale_per = size_t(N) * K / (nv ? 16 : 32);
  d.data = DeviceBuffer<uint8_t>(per * kE);
  const int distinct = 8;
  for (int e = 0; e < distinct; ++e) {
    const auto w = fill.bytes(per, 0, 255, false);
    DSV4_CUDA_CHECK(cudaMemcpy(d.data.get() + e * per, w.data(), per, cudaMemcpyHostToDevice));
  }
  for (int e = distinct; e < kE; ++e)
    DSV4_CUDA_CHECK(cudaMemcpy(d.data.get() + e * per, d.data.get() + (e % distinct) * per, per, cudaMemcpyDeviceToDevice));
  // MXFP4: UE8M0 2^-7..2^-3; NVFP4: E4M3 0.5..1.875 with a global 2^-5.
  d.scale = DeviceBuffer<uint8_t>(nv ? fill.bytes(scale_per * kE, 0x30, 0x3f, true) : fill.bytes(scale_per * kE, 120, 124, false));
  d.global_scale = DeviceBuffer<float>(std::vector<float>(kE, 0x1p-5f));
  return d;
}

// One step's routing: [T, k] distinct uniform picks and weights, and the experts it touches.
struct Routing {
  DeviceBuffer<int32_t> idx;
  DeviceBuffer<float> w;
  int touched = 0;
};
Routing make_routing(Filler& fill, int T) {
  std::vector<int32_t> idx(size_t(T) * kK);
  std::vector<float> w(idx.size());
  std::vector<bool> hit(kE, false);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < kK; ++i) {
      int32_t e;
      do e = int32_t(fill.next() % kE);
      while (std::find(&idx[size_t(t) * kK], &idx[size_t(t) * kK] + i, e) != &idx[size_t(t) * kK] + i);
      idx[size_t(t) * kK + i] = e;
      w[size_t(t) * kK + i] = 0.25f;
      hit[size_t(e)] = true;
    }
  Routing r;
  r.idx = DeviceBuffer<int32_t>(idx);
  r.w = DeviceBuffer<float>(w);
  r.touched = int(std::count(hit.begin(), hit.end(), true));
  return r;
}

struct Row {
  std::string name;
  int T = 0;
  double touched = 0, weight_mb = 0, routed_us = 0, gemm_us = 0, old_us = 0, tflops = 0;
  uint64_t out_hash = 0;
};

// FNV-1a over bytes: two builds' outputs compared bit for bit without carrying them around.
uint64_t fnv1a(const std::vector<uint16_t>& v) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const uint16_t x : v)
    for (int b = 0; b < 2; ++b) h = (h ^ ((x >> (8 * b)) & 0xffu)) * 0x100000001b3ull;
  return h;
}

}  // namespace
}  // namespace dsv4::cuda

int main(int argc, char** argv) {
  using namespace dsv4::cuda;
  using dsv4::cat;
  bool quick = false, nv = false, fp8_prefill = false, fp8_all = false;
  int only_rows = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--nvfp4") == 0) nv = true;
    else if (std::strcmp(argv[i], "--fp8-prefill") == 0) fp8_prefill = true;
    else if (std::strcmp(argv[i], "--fp8-all") == 0) fp8_all = true;
    else if (std::strcmp(argv[i], "--rows") == 0 && i + 1 < argc && std::atoi(argv[i + 1]) > 0) only_rows = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_cuda_moe_bench [--quick] [--nvfp4] [--fp8-prefill | --fp8-all] [--rows T]\n");
      return 2;
    }
  }
  try {
    if (!device_available()) {
      std::fprintf(stderr, "no CUDA device\n");
      return 1;
    }
    bench::print_card();
    std::printf("routed experts of one Flash layer: E=%d D=%d I=%d k=%d, %s%s\n", kE, kD, kI, kK, nv ? "NVFP4" : "MXFP4",
                nv ? "" : fp8_all ? ", every case on the FP8 wgmma kernel" : fp8_prefill ? ", prefill on the FP8 wgmma kernel" : "");
    const int reps = quick ? 3 : 7;
    Filler fill;

    // Ceilings measured in this run.
    bench::Timer timer;
    const double copy_gbps = bench::copy_gbps(timer, reps);
    const double fp8_tflops = bench::lt_peak_tflops(true, 8192);
    std::printf("device-to-device copy: %.1f GB/s (read + write); FP8 GEMM 8192^3 (cuBLASLt): %.1f TFLOP/s\n\n",
                copy_gbps, fp8_tflops);

    dsv4::ModelConfig cfg;
    cfg.hidden_size = kD;
    cfg.moe_intermediate_size = kI;
    cfg.n_routed_experts = kE;
    cfg.num_experts_per_tok = kK;
    cfg.swiglu_limit = 10.0;
    cfg.routed_scaling_factor = 1.5;
    cfg.expert_format = nv ? dsv4::ExpertFormat::kNVFP4 : dsv4::ExpertFormat::kMXFP4;
    const DeviceExperts w1 = make_experts(fill, nv, kI, kD), w3 = make_experts(fill, nv, kI, kD),
                        w2 = make_experts(fill, nv, kD, kI);
    // Bytes of one expert's three packed tensors and their scales (what a touched expert costs).
    const double expert_bytes = 3.0 * (double(kI) * kD / 2 + double(kI) * kD / (nv ? 16 : 32));

    std::vector<Row> rows;
    struct Case { const char* name; int T; bool decode; };
    for (const Case& cs : {Case{"decode", 1, true}, Case{"decode", 8, true}, Case{"decode", 64, true},
                           Case{"decode", 128, true}, Case{"prefill", 2048, false}, Case{"prefill", 8192, false}}) {
      if (only_rows && cs.T != only_rows) continue;
      const int T = cs.T, n_sel = T * kK;
      // As moe_row_runs decides for a chunk (--fp8-all: for every row).
      const bool fp8 = !nv && (fp8_all || (fp8_prefill && grouped_prefill_shaped(n_sel, kE)));
      const int n_inst = cs.decode ? 8 : 1;  // routings replayed in turn (prefill touches every expert anyway)
      const int iters = cs.decode ? (quick ? 16 : 40) : (quick ? 2 : 5);
      // Activations (FP8 + scales) and the shared output: any non-trivial values.
      DeviceBuffer<uint8_t> xq(fill.bytes(size_t(T) * kD, 0, 255, true)), xs(fill.bytes(size_t(T) * kD / 128, 118, 126, false));
      std::vector<uint16_t> hs(size_t(T) * kD);
      for (auto& v : hs) v = uint16_t(0x3c00 | (fill.next() & 0x83ff));
      DeviceBuffer<uint16_t> shared(hs), out(size_t(T) * kD);
      struct Inst {
        Routing r;
        std::unique_ptr<DeviceArena> arena;
        std::unique_ptr<MoeScratch> ms;
      };
      std::vector<Inst> inst(static_cast<size_t>(n_inst));
      DeviceArena counting;
      const MoeScratch sizing(cfg, T, counting);
      double touched = 0;
      for (auto& in : inst) {
        in.r = make_routing(fill, T);
        in.arena = std::make_unique<DeviceArena>(counting.used());
        in.ms = std::make_unique<MoeScratch>(cfg, T, *in.arena);
        touched += in.r.touched;
      }
      touched /= n_inst;
      const auto input = [&](Inst& in) {
        MoeRoutedInput mi;
        mi.x_q = xq.get();
        mi.x_scale = xs.get();
        mi.expert_idx = in.r.idx.get();
        mi.expert_w = in.r.w.get();
        mi.shared = reinterpret_cast<const __nv_bfloat16*>(shared.get());
        mi.out = reinterpret_cast<__nv_bfloat16*>(out.get());
        mi.T = T;
        mi.fp8 = fp8;
        return mi;
      };
      // Eager once each: plans in place for the GEMM-only timing, lazy setup out of the graphs.
      for (auto& in : inst) moe_routed(cfg, w1, w3, w2, *in.ms, input(in), nullptr);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());

      Row row;
      row.name = cs.name;
      row.T = T;
      row.touched = touched;
      row.weight_mb = touched * expert_bytes * 1e-6;
      row.routed_us = 1e6 * timer.median(reps, iters, true, [&](int i, cudaStream_t st) {
        Inst& in = inst[size_t(i % n_inst)];
        moe_routed(cfg, w1, w3, w2, *in.ms, input(in), st);
      });
      // The two grouped GEMMs alone, on the plans already made.
      row.gemm_us = 1e6 * timer.median(reps, iters, true, [&](int i, cudaStream_t st) {
        MoeScratch& ms = *inst[size_t(i % n_inst)].ms;
        MoeGroupedParams p;
        p.format = nv ? ExpertWeightFormat::kNVFP4 : ExpertWeightFormat::kMXFP4;
        p.n_mats = 2;
        p.w[0] = w1.data.get();
        p.w[1] = w3.data.get();
        p.w_scale[0] = w1.scale.get();
        p.w_scale[1] = w3.scale.get();
        p.global_scale[0] = w1.global_scale.get();
        p.global_scale[1] = w3.global_scale.get();
        p.y[0] = ms.g;
        p.y[1] = ms.up;
        p.x = xq.get();
        p.x_scale = xs.get();
        p.x_row = ms.plan.sel_row;
        p.offsets = ms.plan.offsets;
        p.E = kE;
        p.N = kI;
        p.K = kD;
        p.max_sel = n_sel;
        p.fp8_rows = fp8;
        launch_moe_grouped_gemm(p, st);
        p.n_mats = 1;
        p.w[0] = w2.data.get();
        p.w_scale[0] = w2.scale.get();
        p.global_scale[0] = w2.global_scale.get();
        p.y[0] = ms.y;
        p.x = ms.hq;
        p.x_scale = ms.hqs;
        p.x_row = nullptr;
        p.N = kD;
        p.K = kI;
        launch_moe_grouped_gemm(p, st);
      });
      if (cs.decode) {  // the old path: one GEMV per (row, pick), SwiGLU, GEMV, combine
        DeviceBuffer<uint16_t> g(size_t(n_sel) * kI), u(size_t(n_sel) * kI), h(size_t(n_sel) * kI), y(size_t(n_sel) * kD);
        DeviceBuffer<uint8_t> hq(size_t(n_sel) * kI), hqs(size_t(n_sel) * kI / 128);
        row.old_us = 1e6 * timer.median(reps, iters, true, [&](int i, cudaStream_t st) {
          Inst& in = inst[size_t(i % n_inst)];
          const auto gemv = [&](const DeviceExperts& w, const uint8_t* x, const uint8_t* x_s, int per_x, void* yout) {
            GemvMxfp4Params p;
            p.format = nv ? ExpertWeightFormat::kNVFP4 : ExpertWeightFormat::kMXFP4;
            p.w = w.data.get();
            p.w_scale = w.scale.get();
            p.global_scale = w.global_scale.get();
            p.expert_idx = in.r.idx.get();
            p.x = x;
            p.x_scale = x_s;
            p.sel_per_x = per_x;
            p.y = yout;
            p.out_bf16 = true;
            p.n_sel = n_sel;
            p.n_experts = kE;
            p.N = w.N;
            p.K = w.K;
            launch_gemv_mxfp4(p, st);
          };
          gemv(w1, xq.get(), xs.get(), kK, g.get());
          gemv(w3, xq.get(), xs.get(), kK, u.get());
          SwigluParams sp;
          sp.gate = reinterpret_cast<const __nv_bfloat16*>(g.get());
          sp.up = reinterpret_cast<const __nv_bfloat16*>(u.get());
          sp.row_weight = in.r.w.get();
          sp.h = reinterpret_cast<__nv_bfloat16*>(h.get());
          sp.q = hq.get();
          sp.q_scale = hqs.get();
          sp.n_rows = n_sel;
          sp.I = kI;
          launch_swiglu(sp, st);
          gemv(w2, hq.get(), hqs.get(), 1, y.get());
          MoeCombineParams mp;
          mp.routed = reinterpret_cast<const __nv_bfloat16*>(y.get());
          mp.shared = reinterpret_cast<const __nv_bfloat16*>(shared.get());
          mp.out = reinterpret_cast<__nv_bfloat16*>(out.get());
          mp.expert_ids = in.r.idx.get();
          mp.T = T;
          mp.k = kK;
          mp.D = kD;
          launch_moe_combine(mp, st);
        });
      }
      // The first routing once more, eagerly: its combined output, row order restored, hashed.
      moe_routed(cfg, w1, w3, w2, *inst[0].ms, input(inst[0]), nullptr);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      row.out_hash = fnv1a(out.download());
      row.tflops = 2.0 * n_sel * 3.0 * kI * kD / (row.gemm_us * 1e-6) * 1e-12;
      rows.push_back(row);
      std::fflush(stdout);
    }

    std::printf("%-8s %5s %8s %9s %10s %10s %9s %8s %10s %9s %8s %17s\n", "pass", "rows", "experts", "weight_MB",
                "routed_us", "gemm_us", "GB/s", "of_copy", "old_us", "TFLOP/s", "of_fp8", "out_hash");
    for (const Row& r : rows) {
      const double gbps = r.weight_mb * 1e-3 / (r.gemm_us * 1e-6);
      std::printf("%-8s %5d %8.1f %9.1f %10.1f %10.1f %9.1f %7.1f%% %10s %9.1f %7.1f%% %017llx\n", r.name.c_str(), r.T,
                  r.touched, r.weight_mb, r.routed_us, r.gemm_us, gbps, 100 * gbps / copy_gbps,
                  r.old_us > 0 ? cat(int64_t(r.old_us + 0.5)).c_str() : "-", r.tflops, 100 * r.tflops / fp8_tflops,
                  static_cast<unsigned long long>(r.out_hash));
    }
    std::printf("\nweight_MB: packed w1+w3+w2 and scales of the experts a step touches (mean over its routings);\n"
                "GB/s and of_copy: those bytes over the two grouped GEMMs' time, against the copy above;\n"
                "TFLOP/s: 2·rows·k·3·I·D over the same time, against the FP8 GEMM above; routed_us: the whole\n"
                "moe_routed (plan, GEMMs, SwiGLU, combine); old_us: the per-selection GEMV path it replaces;\n"
                "out_hash: FNV-1a of the first routing's combined output (equal hashes: equal bits).\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_moe_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
