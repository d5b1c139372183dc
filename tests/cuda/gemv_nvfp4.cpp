// Parity of kernels/gemv_nvfp4.cu (dense NVFP4 linears, §11.6) against a double-precision product
// of the scalar dequantisation (WeightMatrix::dequant_rows), for both inputs the kernel takes: the
// FP8 1×128 activations of a replaced FP8 linear and the BF16 activations of a replaced BF16 one.
#include <cmath>

#include "cuda/kernels/gemv_fp8.cuh"
#include "cuda/kernels/gemv_nvfp4.cuh"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

struct Nvfp4Case {
  int M, N, K;
  bool fp8_in;    // FP8 activations (linear_q) or BF16 (linear_f32)
  bool out_bf16;
};

class GemvNvfp4Test : public CudaOpTest, public ::testing::WithParamInterface<Nvfp4Case> {};

TEST_P(GemvNvfp4Test, MatchesDequantisedProduct) {
  const auto& c = GetParam();
  // Every E2M1 code (both zeros, ±6) appears: raw random bytes; block scales over the whole E4M3
  // grid (subnormals and ±448); a global scale ~ ModelOpt's amax/(6·448).
  std::vector<uint8_t> w(size_t(c.N) * c.K / 2);
  for (auto& b : w) b = uint8_t(uniform_int(0, 255));
  const auto ws = random_e4m3(size_t(c.N) * c.K / kNVFP4BlockSize);
  const float global = uniform(0x1p-12f, 0x1p-6f);
  const size_t nx = size_t(c.M) * c.K;
  const auto xq = random_e4m3(c.fp8_in ? nx : 0), xs = random_e8m0(c.fp8_in ? nx / kActBlockSize : 0, 8);
  const auto xb = to_bf16(normals(c.fp8_in ? 0 : nx));
  DeviceBuffer<uint8_t> d_w(w), d_ws(ws), d_xq(xq), d_xs(xs);
  DeviceBuffer<uint16_t> d_xb(xb);
  DeviceBuffer<float> d_y32(c.out_bf16 ? 0 : size_t(c.M) * c.N);
  DeviceBuffer<uint16_t> d_y16(c.out_bf16 ? size_t(c.M) * c.N : 0);
  d_y32.fill_bytes(kPoisonByte);
  d_y16.fill_bytes(kPoisonByte);
  GemvNvfp4Params p;
  p.w = d_w.get();
  p.w_scale = d_ws.get();
  p.global_scale = global;
  if (c.fp8_in) {
    p.x_fp8 = d_xq.get();
    p.x_scale = d_xs.get();
  } else {
    p.x_bf16 = bf16_ptr(d_xb);
  }
  p.y = c.out_bf16 ? static_cast<void*>(d_y16.get()) : static_cast<void*>(d_y32.get());
  p.M = c.M;
  p.N = c.N;
  p.K = c.K;
  p.out_bf16 = c.out_bf16;
  launch_gemv_nvfp4(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto y = c.out_bf16 ? from_bf16(d_y16.download()) : d_y32.download();

  // Budget, first order in u = 2^-24 relative to Σ|w·x|: the products e2m1·x are exact in FP32
  // (2 + 8 significant bits at most); each 16-element half sums in 16 roundings, its scale
  // product (exact: E4M3·2^14 times a power of two) costs 1; a lane's running sum over its
  // halves ≤ K/512 + 2; the warp sum 5, the split-K combination ≤ 7, the global multiply 1; the
  // scalar reference rounds e2m1·s·g once per weight (quant.cpp): 33 + K/512 in all. BF16 output
  // adds half an ulp of |y|.
  const double gamma = (33 + c.K / 512.0) * kF32Unit;
  WeightMatrix wm;
  wm.name = "test.nvfp4";
  wm.format = WeightFormat::kNVFP4;
  wm.rows = c.N;
  wm.cols = c.K;
  wm.data = w.data();
  wm.scale = ws.data();
  wm.global_scale = global;
  std::vector<double> ref(y.size()), budget(y.size());
  std::vector<float> wr(size_t(c.K));
  for (int n = 0; n < c.N; ++n) {
    wm.dequant_rows(n, 1, wr.data());
    for (int m = 0; m < c.M; ++m) {
      double acc = 0, sa = 0;
      for (int k = 0; k < c.K; ++k) {
        const size_t i = size_t(m) * c.K + k;
        const double xv = c.fp8_in ? double(e4m3_to_f32(xq[i])) * e8m0_to_f32(xs[i / kActBlockSize])
                                   : double(bf16_to_f32(xb[i]));
        acc += wr[size_t(k)] * xv;
        sa += std::fabs(wr[size_t(k)] * xv);
      }
      const size_t o = size_t(m) * c.N + n;
      ref[o] = acc;
      budget[o] = gamma * sa * (1 + kBf16HalfUlp) + (c.out_bf16 ? kBf16HalfUlp * std::fabs(acc) : 0) + 1e-30;
    }
  }
  expect_parity(cat("gemv_nvfp4 M=", c.M, " N=", c.N, " K=", c.K, c.fp8_in ? " fp8-in" : " bf16-in",
                    c.out_bf16 ? " bf16-out" : " f32-out"),
                y, ref, budget);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemvNvfp4Test,
    ::testing::Values(Nvfp4Case{1, 1024, 4096, true, true},    // Flash wq_a, decode
                      Nvfp4Case{3, 512, 4096, true, true},     // Flash wkv, T = 3
                      Nvfp4Case{8, 4096, 2048, true, true},    // shared w2, a full batch of 8
                      Nvfp4Case{5, 129, 7168, true, false},    // odd N, Pro's D (K = 7168)
                      Nvfp4Case{2, 1024, 4096, false, false},  // compressor wkv/wgate (BF16 in, FP32 out)
                      Nvfp4Case{8, 64, 4096, false, false},    // indexer weights_proj / router: narrow N, split K
                      Nvfp4Case{1, 1, 32, false, false},       // one chunk
                      Nvfp4Case{4, 257, 160, false, true}));   // K not a multiple of 128 (BF16 input)

}  // namespace
}  // namespace dsv4::cuda::test
