// Dense-linear benchmark: the matmul dispatch's kernels (skinny tensor-core GEMM, cuBLASLt
// block-scaled FP8 / BF16) and the GEMV they replace, at DeepSeek-V4 Flash shapes for 1…8192
// rows; pairs of linears on one input (matmul_pair); mHC pre at 1 / 64 / 2048 rows. Few rows are
// read as a share of the device-to-device copy bandwidth, many rows as a share of the FP8 (or
// BF16) dense peak — both measured in the same run (design.md "Speed principles"): the peak is
// cuBLASLt's plain FP8 (BF16) GEMM at 8192³.
// Correctness is tests/cuda's job, not this program's.
//
// Usage: bench_cuda_matmul_bench [--quick] [--only SUBSTRING]. --only keeps the shapes whose name
// contains SUBSTRING (one kernel under a profiler). Prints tables; the card and date head the output;
// a '*' marks the kernel matmul() chooses for that row count; skinny/R is the skinny kernel with
// R rows of x per weight pass; wgmma the FP8 skinny GEMM on wgmma (MatmulPath::kWgmma).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "cuda/kernels/gemv_bf16.cuh"
#include "cuda/kernels/gemv_fp8.cuh"
#include "cuda/kernels/mhc.cuh"
#include "cuda/kernels/skinny_gemm.cuh"
#include "cuda/matmul.h"
#include "cuda_bench_util.h"

namespace dsv4::cuda {
namespace {

using bench::Filler;
using bench::n_copies_for;
using bench::replicated;
using bench::lt_peak_tflops;
using bench::Timer;

struct Shape {
  const char* name;
  bool fp8;
  int N, K;
  bool out_bf16;
  int max_m;  // the LM head only ever sees a few rows
};

enum class Kernel { kGemv, kSkinny, kLt, kWgmma };
const char* kernel_name(Kernel k) {
  return k == Kernel::kGemv ? "gemv/8" : k == Kernel::kSkinny ? "skinny" : k == Kernel::kWgmma ? "wgmma" : "lt";
}

}  // namespace
}  // namespace dsv4::cuda

int main(int argc, char** argv) {
  using namespace dsv4::cuda;
  const auto args = bench::parse_bench_args(argc, argv, "bench_cuda_matmul_bench");
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
    const int reps = quick ? 3 : 7;
    matmul_reserve();  // the cuBLASLt workspace exists before any capture

    const double copy_gbps = bench::copy_gbps(timer, reps);
    const double fp8_peak = lt_peak_tflops(true, 8192);
    const double bf16_peak = lt_peak_tflops(false, 8192);
    std::printf("device-to-device copy: %.1f GB/s (read + write)\n", copy_gbps);
    std::printf("cuBLASLt FP8 E4M3 GEMM 8192^3 (tensor-scaled, BF16 out): %.1f TFLOP/s  [FP8 peak]\n", fp8_peak);
    std::printf("cuBLASLt BF16 GEMM 8192^3 (BF16 out): %.1f TFLOP/s  [BF16 peak]\n\n", bf16_peak);

    const std::vector<int> ms = quick ? std::vector<int>{1, 8, 64, 128, 512, 8192}
                                      : std::vector<int>{1, 2, 7, 8, 9, 33, 64, 127, 128, 129, 512, 2048, 8192};
    const std::vector<Shape> shapes = {
        {"fp8 wq_a (Flash)", true, 1024, 4096, true, 1 << 30},
        {"fp8 wq_b (Flash)", true, 32768, 1024, true, 1 << 30},
        {"fp8 wkv (Flash)", true, 512, 4096, true, 1 << 30},
        {"fp8 wo_b (Flash)", true, 4096, 8192, true, 1 << 30},
        {"fp8 shared w1 (Flash)", true, 2048, 4096, true, 1 << 30},
        {"fp8 shared w2 (Flash)", true, 4096, 2048, true, 1 << 30},
        {"fp8 indexer wq_b (Flash)", true, 8192, 1024, true, 1 << 30},
        {"bf16 router (Flash)", false, 256, 4096, false, 1 << 30},
        {"bf16 compressor wkv (CSA)", false, 1024, 4096, false, 1 << 30},
        {"bf16 weights_proj (Flash)", false, 64, 4096, false, 1 << 30},
        {"bf16 head (Flash)", false, 129280, 4096, false, 128},
    };
    Filler fill;
    std::printf("%-26s %5s %-10s %10s %9s %7s %9s %7s\n", "shape", "M", "kernel", "time_us", "GB/s", "of_copy",
                "TFLOP/s", "of_peak");
    for (const Shape& s : shapes) {
      if (!args->wants(s.name)) continue;
      const int mmax = std::min(s.max_m, ms.back());
      const size_t in_bytes = s.fp8 ? 1 : 2, out_bytes = s.out_bf16 ? 2 : 4;
      const size_t wbytes = size_t(s.N) * s.K * in_bytes;
      const size_t sbytes = s.fp8 ? size_t((s.N + 127) / 128) * (s.K / 128) : 0;
      const int copies = n_copies_for(wbytes, l2);
      DeviceBuffer<uint8_t> w, ws;
      {
        const auto hw = s.fp8 ? fill.bytes(wbytes, 0, 255, true) : std::vector<uint8_t>();
        const auto hw16 = s.fp8 ? std::vector<uint16_t>() : fill.bf16(wbytes / 2);
        const auto hs = fill.bytes(std::max<size_t>(sbytes, 1), 118, 126, false);
        w = replicated(s.fp8 ? static_cast<const void*>(hw.data()) : hw16.data(), wbytes, copies);
        ws = replicated(hs.data(), sbytes, copies);
      }
      const size_t xbytes = size_t(mmax) * s.K * in_bytes;
      DeviceBuffer<uint8_t> x(s.fp8 ? fill.bytes(xbytes, 0, 255, true) : std::vector<uint8_t>(xbytes));
      if (!s.fp8) {
        const auto v = fill.bf16(xbytes / 2);
        DSV4_CUDA_CHECK(cudaMemcpy(x.get(), v.data(), xbytes, cudaMemcpyHostToDevice));
      }
      DeviceBuffer<uint8_t> xs(fill.bytes(std::max<size_t>(size_t(mmax) * (s.K / 128), 1), 120, 130, false));
      DeviceBuffer<uint8_t> y(size_t(mmax) * s.N * out_bytes);
      for (const int M : ms) {
        if (M > mmax) continue;
        const MatmulPath chosen = matmul_choose(s.fp8, M, s.N, s.K);
        const SkinnyKind kind = s.fp8 ? SkinnyKind::kFp8 : SkinnyKind::kBf16;
        // (kernel, skinny rows per pass): above 8 rows every pass width the skinny kernel has
        // (skinny_rows_per_pass's evidence); the rule's own choice is the one marked.
        std::vector<std::pair<Kernel, int>> kernels;
        if (M <= 128) kernels.emplace_back(Kernel::kGemv, 0);
        if (M <= 8) kernels.emplace_back(Kernel::kSkinny, skinny_rows_per_pass(kind));
        if (M > 8 && M <= 512)
          for (const int rpp : {8, 16, 32, 64}) kernels.emplace_back(Kernel::kSkinny, rpp);
        if (s.fp8 && M <= 128) kernels.emplace_back(Kernel::kWgmma, 0);
        if (M >= 64) kernels.emplace_back(Kernel::kLt, 0);
        for (const auto& [k, rpp] : kernels) {
          const int iters = M >= 2048 ? 5 : quick ? 10 : 30;
          MatmulPath ran = MatmulPath::kAuto;
          const double t = timer.median(reps, iters, true, [&](int i, cudaStream_t st) {
            const uint8_t* wi = w.get() + size_t(i % copies) * wbytes;
            const uint8_t* si = ws.get() + size_t(i % copies) * sbytes;
            if (k == Kernel::kGemv) {  // the old linear_q: GEMVs over slices of kGemvMaxBatch rows
              for (int r0 = 0; r0 < M; r0 += kGemvMaxBatch) {
                const int m = std::min(kGemvMaxBatch, M - r0);
                if (s.fp8) {
                  GemvFp8Params p;
                  p.w = wi;
                  p.w_scale = si;
                  p.x = x.get() + size_t(r0) * s.K;
                  p.x_scale = xs.get() + size_t(r0) * (s.K / 128);
                  p.y = y.get() + size_t(r0) * s.N * out_bytes;
                  p.M = m;
                  p.N = s.N;
                  p.K = s.K;
                  p.out_bf16 = s.out_bf16;
                  launch_gemv_fp8(p, st);
                } else {
                  GemvBf16Params p;
                  p.w = reinterpret_cast<const __nv_bfloat16*>(wi);
                  p.x = reinterpret_cast<const __nv_bfloat16*>(x.get()) + size_t(r0) * s.K;
                  p.y = y.get() + size_t(r0) * s.N * out_bytes;
                  p.M = m;
                  p.N = s.N;
                  p.K = s.K;
                  p.out_bf16 = s.out_bf16;
                  launch_gemv_bf16(p, st);
                }
              }
              return;
            }
            if (k == Kernel::kSkinny) {
              SkinnyGemmParams p;
              p.kind = kind;
              p.w = wi;
              p.w_scale = s.fp8 ? si : nullptr;
              p.x = x.get();
              p.x_scale = s.fp8 ? xs.get() : nullptr;
              p.y = y.get();
              p.M = M;
              p.N = s.N;
              p.K = s.K;
              p.out_bf16 = s.out_bf16;
              p.rows_per_pass = rpp;
              launch_skinny_gemm(p, st);
              ran = MatmulPath::kSkinny;
              return;
            }
            MatmulParams p;
            p.w = wi;
            p.w_scale = s.fp8 ? si : nullptr;
            p.x = x.get();
            p.x_scale = s.fp8 ? xs.get() : nullptr;
            p.y = y.get();
            p.M = M;
            p.N = s.N;
            p.K = s.K;
            p.out_bf16 = s.out_bf16;
            p.path = k == Kernel::kWgmma ? MatmulPath::kWgmma : MatmulPath::kLt;
            ran = matmul(p, st);
          });
          const double bytes = double(wbytes + sbytes) + double(M) * s.K * in_bytes +
                               (s.fp8 ? double(M) * (s.K / 128) : 0) + double(M) * s.N * out_bytes;
          const double flops = 2.0 * M * double(s.N) * s.K;
          const double peak = s.fp8 ? fp8_peak : bf16_peak;
          const bool star = (k == Kernel::kSkinny && chosen == MatmulPath::kSkinny && rpp == skinny_rows_per_pass(kind)) ||
                            (k == Kernel::kLt && chosen == MatmulPath::kLt);
          std::string name = kernel_name(k);
          if (k == Kernel::kSkinny) name += "/" + std::to_string(rpp);
          if (k == Kernel::kLt && ran == MatmulPath::kSkinny) name = "lt->sk";  // cuBLASLt had no algorithm
          std::printf("%-26s %5d %-9s%s %10.2f %9.1f %6.1f%% %9.1f %6.1f%%\n", s.name, M, name.c_str(), star ? "*" : " ",
                      t * 1e6, bytes / t * 1e-9, 100 * bytes / t * 1e-9 / copy_gbps, flops / t * 1e-12,
                      100 * flops / t * 1e-12 / peak);
        }
      }
    }

    // Two linears of the same activations (matmul_pair, rule 1c): two matmul calls against one
    // pair launch, the same bytes; each output's bits are the same either way (tests/cuda/matmul.cpp).
    struct PairShape {
      const char* name;
      int N_a, N_b, K;
    };
    std::printf("\n%-26s %5s %-10s %10s %9s %7s\n", "pairs (Flash)", "M", "kernel", "time_us", "GB/s", "of_copy");
    for (const PairShape& s : {PairShape{"pair wkv+wq_a (Flash)", 512, 1024, 4096},
                               PairShape{"pair shared w1+w3 (Flash)", 2048, 2048, 4096}}) {
      if (!args->wants(s.name)) continue;
      constexpr int kMaxM = 128;
      const size_t wa = size_t(s.N_a) * s.K, wb = size_t(s.N_b) * s.K;
      const size_t sa = size_t((s.N_a + 127) / 128) * (s.K / 128), sb = size_t((s.N_b + 127) / 128) * (s.K / 128);
      const size_t wbytes = wa + wb + sa + sb;  // one copy: a, b, a's scales, b's scales
      const int copies = n_copies_for(wbytes, l2);
      DeviceBuffer<uint8_t> w;
      {
        auto hw = fill.bytes(wa + wb, 0, 255, true);
        const auto hs = fill.bytes(sa + sb, 118, 126, false);
        hw.insert(hw.end(), hs.begin(), hs.end());
        w = replicated(hw.data(), wbytes, copies);
      }
      DeviceBuffer<uint8_t> x(fill.bytes(size_t(kMaxM) * s.K, 0, 255, true));
      DeviceBuffer<uint8_t> xs(fill.bytes(size_t(kMaxM) * (s.K / 128), 120, 130, false));
      DeviceBuffer<uint16_t> ya(size_t(kMaxM) * s.N_a), yb(size_t(kMaxM) * s.N_b);
      for (const int M : {1, 8, 64, 128}) {
        for (const bool pair : {false, true}) {
          const double t = timer.median(reps, quick ? 10 : 30, true, [&](int i, cudaStream_t st) {
            const uint8_t* base = w.get() + size_t(i % copies) * wbytes;
            MatmulParams a, b;
            a.w = base;
            b.w = base + wa;
            a.w_scale = base + wa + wb;
            b.w_scale = base + wa + wb + sa;
            a.x = b.x = x.get();
            a.x_scale = b.x_scale = xs.get();
            a.y = ya.get();
            b.y = yb.get();
            a.M = b.M = M;
            a.N = s.N_a;
            b.N = s.N_b;
            a.K = b.K = s.K;
            if (pair) {
              matmul_pair(a, b, st);
            } else {
              matmul(a, st);
              matmul(b, st);
            }
          });
          const double bytes = double(wbytes) + double(M) * s.K + double(M) * (s.K / 128) + double(M) * (s.N_a + s.N_b) * 2;
          std::printf("%-26s %5d %-9s%s %10.2f %9.1f %6.1f%%\n", s.name, M, pair ? "pair" : "two calls", pair ? "*" : " ",
                      t * 1e6, bytes / t * 1e-9, 100 * bytes / t * 1e-9 / copy_gbps);
        }
      }
    }

    // The grouped wo_a (§4.5, grouped_out_proj.cuh) at Flash shape: the skinny kernel's FP8-as-BF16
    // kind, 8 groups of 1024 rows, each reading its own 4096-wide slice of the BF16 attention
    // output; every pass width (skinny_rows_per_pass's evidence for this kind).
    {
      constexpr int G = 8, R = 1024, K = 4096, kMaxM = 128;
      const size_t wbytes = size_t(G) * R * K, sbytes = size_t(G * R / 128) * (K / 128);
      const int copies = n_copies_for(wbytes, l2);
      DeviceBuffer<uint8_t> w, ws;
      {
        const auto hw = fill.bytes(wbytes, 0, 255, true);
        const auto hs = fill.bytes(sbytes, 118, 126, false);
        w = replicated(hw.data(), wbytes, copies);
        ws = replicated(hs.data(), sbytes, copies);
      }
      DeviceBuffer<uint16_t> o(fill.bf16(size_t(kMaxM) * G * K)), z(size_t(kMaxM) * G * R);
      std::printf("\n%-26s %5s %-10s %10s %9s %7s\n", "wo_a (Flash, grouped)", "M", "kernel", "time_us", "GB/s", "of_copy");
      for (const int M : {1, 9, 33, 64, 128}) {
        for (const int rpp : {8, 16, 32, 64}) {
          if (M <= 8 && rpp != skinny_rows_per_pass(SkinnyKind::kFp8AsBf16)) continue;
          const double t = timer.median(reps, quick ? 10 : 30, true, [&](int i, cudaStream_t st) {
            SkinnyGemmParams p;
            p.kind = SkinnyKind::kFp8AsBf16;
            p.w = w.get() + size_t(i % copies) * wbytes;
            p.w_scale = ws.get() + size_t(i % copies) * sbytes;
            p.x = o.get();
            p.ldx = int64_t(G) * K;
            p.rows_per_group = R;
            p.group_stride = K;
            p.y = z.get();
            p.M = M;
            p.N = G * R;
            p.K = K;
            p.out_bf16 = true;
            p.rows_per_pass = rpp;
            launch_skinny_gemm(p, st);
          });
          const double bytes = double(wbytes + sbytes) + double(M) * G * K * 2 + double(M) * G * R * 2;
          const bool star = rpp == skinny_rows_per_pass(SkinnyKind::kFp8AsBf16);
          std::printf("%-26s %5d %-9s%s %10.2f %9.1f %6.1f%%\n", "wo_a", M, ("skinny/" + std::to_string(rpp)).c_str(),
                      star ? "*" : " ", t * 1e6, bytes / t * 1e-9, 100 * bytes / t * 1e-9 / copy_gbps);
        }
      }
    }

    // mHC pre (§3.1) at Flash shape: the 24-wide FP32 projection of the 4·4096 streams, Sinkhorn,
    // collapse, with the attention RMSNorm and FP8 quantisation fused. Bytes: fn once + X + u.
    std::printf("\n%-26s %5s %10s %9s %7s\n", "mhc pre (Flash, fused norm+fp8)", "rows", "time_us", "GB/s", "of_copy");
    for (const int T : {1, 64, 2048}) {
      const int D = 4096, nD = kHcStreams * D;
      const auto hx = fill.bf16(size_t(T) * nD);
      DeviceBuffer<uint16_t> x(hx), u(size_t(T) * D), nw(fill.bf16(size_t(D)));
      std::vector<float> hfn(size_t(kHcMix) * nD);
      for (auto& v : hfn) v = float(int(fill.next() % 2001) - 1000) * 1e-5f;
      DeviceBuffer<float> fn(hfn), base(std::vector<float>(kHcMix, 0.1f)), scale(std::vector<float>{1.0f, 1.0f, 1.0f}),
          part(mhc_pre_partial_floats(T, D)), post(size_t(T) * kHcStreams), comb(size_t(T) * kHcStreams * kHcStreams);
      DeviceBuffer<uint8_t> q(size_t(T) * D), qs(size_t(T) * D / 128);
      MhcPreParams p;
      p.x = reinterpret_cast<const __nv_bfloat16*>(x.get());
      p.fn = fn.get();
      p.base = base.get();
      p.scale = scale.get();
      p.partial = part.get();
      p.u = reinterpret_cast<__nv_bfloat16*>(u.get());
      p.post = post.get();
      p.comb = comb.get();
      p.norm_weight = reinterpret_cast<const __nv_bfloat16*>(nw.get());
      p.q = q.get();
      p.q_scale = qs.get();
      p.n_tokens = T;
      p.D = D;
      const double t = timer.median(reps, T >= 2048 ? 10 : 50, true, [&](int, cudaStream_t st) { launch_mhc_pre(p, st); });
      const double bytes = double(hfn.size()) * 4 + double(hx.size()) * 2 + double(T) * D * 3;
      std::printf("%-26s %5d %10.2f %9.1f %6.1f%%\n", "mhc pre", T, t * 1e6, bytes / t * 1e-9,
                  100 * bytes / t * 1e-9 / copy_gbps);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_matmul_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
