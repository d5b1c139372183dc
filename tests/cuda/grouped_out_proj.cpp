// Parity of kernels/grouped_out_proj.cu (wo_a, §4.5) against a double-precision grouped product
// of the BF16 attention output with the scalar dequantisation of the FP8 weight
// (WeightMatrix::dequant_rows, §11.2) or the BF16 weight itself; tokens of a batch equal the same
// tokens alone, bit for bit. The same product through cuBLASLt (matmul.h grouped_out_proj_lt,
// a long prompt chunk's rows).
#include <algorithm>
#include <cmath>

#include "cuda/kernels/grouped_out_proj.cuh"
#include "cuda/matmul.h"
#include "model/quant.h"
#include "op_parity.h"
#include "util/float_formats.h"

namespace dsv4::cuda::test {
namespace {

struct GroupedCase {
  int T, G, R, K;
  bool fp8;
};

// Random inputs of a case: o (BF16), and FP8 weights (bytes over the whole E4M3 grid, tile scales
// over 2^±8) or BF16 weights of a trained size; wd is the oracle's weight.
struct GroupedInputs {
  std::vector<uint16_t> o, w16;
  std::vector<uint8_t> w8, ws;
  std::vector<float> wd;
};

// A case's inputs on the device, z poisoned, and the parameters over them.
struct GroupedDevice {
  DeviceBuffer<uint16_t> o, w16, z;
  DeviceBuffer<uint8_t> w8, ws;
  GroupedOutProjParams p;
  GroupedDevice(const GroupedCase& c, const GroupedInputs& in)
      : o(in.o), w16(in.w16), z(size_t(c.T) * c.G * c.R), w8(in.w8), ws(in.ws) {
    z.fill_bytes(kPoisonByte);
    p.o = bf16_ptr(o);
    p.w_fp8 = c.fp8 ? w8.get() : nullptr;
    p.w_scale = c.fp8 ? ws.get() : nullptr;
    p.w_bf16 = c.fp8 ? nullptr : bf16_ptr(w16);
    p.z = bf16_ptr(z);
    p.T = c.T;
    p.G = c.G;
    p.R = c.R;
    p.K = c.K;
  }
};

class GroupedOutProjTest : public CudaOpTest, public ::testing::WithParamInterface<GroupedCase> {
 protected:
  GroupedInputs inputs(const GroupedCase& c) {
    const int n_rows = c.G * c.R;
    const int nkb = c.K / int(kFP8BlockSize), nrb = (n_rows + int(kFP8BlockSize) - 1) / int(kFP8BlockSize);
    GroupedInputs in;
    in.o = to_bf16(normals(size_t(c.T) * c.G * c.K, 1.0f));
    if (c.fp8) {
      in.w8 = random_e4m3(size_t(n_rows) * c.K);
      in.ws = random_e8m0(size_t(nrb) * nkb, 8);
      // The scalar FP8 dequant with the scale of the ABSOLUTE row g·R + r (so R = 64 or 96 puts
      // two groups in one 128-row tile).
      WeightMatrix wm;
      wm.name = "test.attn.wo_a";
      wm.format = WeightFormat::kFP8Block;
      wm.rows = n_rows;
      wm.cols = c.K;
      wm.data = in.w8.data();
      wm.scale = in.ws.data();
      in.wd.resize(size_t(n_rows) * c.K);
      wm.dequant_rows(0, n_rows, in.wd.data());
    } else {
      in.w16 = to_bf16(normals(size_t(n_rows) * c.K, 0.02f));
      in.wd = from_bf16(in.w16);
    }
    return in;
  }

  // The double-precision grouped product, and per element gamma·Σ|terms| plus the BF16 output's
  // half ulp.
  static void reference(const GroupedCase& c, const GroupedInputs& in, double gamma, std::vector<double>& ref,
                        std::vector<double>& budget) {
    const int n_rows = c.G * c.R;
    const auto of = from_bf16(in.o);
    ref.assign(size_t(c.T) * n_rows, 0.0);
    budget.assign(ref.size(), 0.0);
    for (int t = 0; t < c.T; ++t)
      for (int n = 0; n < n_rows; ++n) {
        const int g = n / c.R;
        const float* orow = of.data() + (size_t(t) * c.G + g) * c.K;  // §4.5: heads of group g
        const float* wrow = in.wd.data() + size_t(n) * c.K;
        double sum = 0, sa = 0;
        for (int k = 0; k < c.K; ++k) {
          const double v = double(orow[k]) * wrow[k];
          sum += v;
          sa += std::fabs(v);
        }
        const size_t i = size_t(t) * n_rows + n;
        ref[i] = sum;
        budget[i] = gamma * sa * (1 + kBf16HalfUlp) + kBf16HalfUlp * std::fabs(sum) + 1e-30;
      }
  }
};

TEST_P(GroupedOutProjTest, MatchesGroupedProduct) {
  const auto c = GetParam();
  const int n_rows = c.G * c.R;
  const GroupedInputs in = inputs(c);
  GroupedDevice dev(c, in);
  const GroupedOutProjParams& p = dev.p;
  launch_grouped_out_proj(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto z = from_bf16(dev.z.download());

  // Budget (the skinny tensor-core GEMM, tests/cuda/matmul.cpp's accumulation model): products
  // of BF16 by BF16 (E4M3 expands exactly to BF16) are exact; one k16 HMMA adds 16 of them to the
  // FP32 accumulator in ≤ 4 truncating steps of ≤ 2u of Σ|terms| (Fasi et al. 2021). FP8: 8 HMMAs
  // per 128-wide K block (64u), the block sums scaled by the power-of-two tile scale (exact) and
  // added by FMAs (≤ K/128·u), ≤ 64 split sums (64u). BF16: K/16 HMMAs (K/2·u) + 64u. The BF16
  // output adds half an ulp.
  std::vector<double> ref, budget;
  reference(c, in, (c.fp8 ? 128 + c.K / 128.0 : c.K / 2.0 + 64) * kF32Unit, ref, budget);
  expect_parity(cat("grouped_out_proj T=", c.T, " G=", c.G, " R=", c.R, " K=", c.K, c.fp8 ? " fp8" : " bf16"), z,
                ref, budget);

  // Row invariance: the last token alone gives the bytes it had in the batch.
  DeviceBuffer<uint16_t> d_z1{size_t(n_rows)};
  d_z1.fill_bytes(kPoisonByte);
  GroupedOutProjParams p1 = p;
  p1.o = p.o + size_t(c.T - 1) * c.G * c.K;
  p1.z = bf16_ptr(d_z1);
  p1.T = 1;
  launch_grouped_out_proj(p1, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto all = dev.z.download(), one = d_z1.download();
  EXPECT_TRUE(std::equal(one.begin(), one.end(), all.begin() + std::ptrdiff_t(c.T - 1) * n_rows))
      << "token " << c.T - 1 << " alone differs from the same token in a batch of " << c.T;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GroupedOutProjTest,
    ::testing::Values(GroupedCase{1, 8, 1024, 4096, true},     // Flash decode (H = 64, G = 8)
                      GroupedCase{1, 8, 1024, 4096, false},    // Flash, BF16 checkpoint
                      GroupedCase{2, 8, 1024, 4096, true},
                      GroupedCase{1, 16, 1024, 4096, true},    // Pro decode (H = 128, G = 16)
                      GroupedCase{5, 2, 64, 256, true},        // fixtures: one 128-row tile spans both groups
                      GroupedCase{5, 2, 64, 256, false},
                      GroupedCase{3, 2, 128, 512, true},       // nano
                      GroupedCase{256, 2, 64, 256, true},      // longest prefill chunk
                      GroupedCase{9, 3, 96, 384, true},        // tile boundaries inside groups, partial token tile
                      GroupedCase{13, 3, 64, 128, false},
                      GroupedCase{4, 1, 1, 128, true},
                      GroupedCase{64, 2, 1024, 4096, true},    // Flash groups, a 64-token verify: one weight pass
                      GroupedCase{129, 2, 1024, 4096, true})); // three passes, the last partial


// The long-chunk path: per group the FP8 weights expanded to BF16 (exact), then cuBLASLt's BF16
// GEMM on the group's column slices of o and z. Budget: tests/cuda/matmul.cpp's cuBLASLt BF16
// model, (K/2 + 64)·u of Σ|terms|, for FP8 and BF16 weights alike (both reach the GEMM as BF16).
class GroupedOutProjLtTest : public GroupedOutProjTest {};

TEST_P(GroupedOutProjLtTest, MatchesGroupedProduct) {
  const auto c = GetParam();
  const GroupedInputs in = inputs(c);
  GroupedDevice dev(c, in);
  DeviceBuffer<uint16_t> group(size_t(c.R) * c.K);
  if (!grouped_out_proj_lt(dev.p, bf16_ptr(group), nullptr))
    GTEST_SKIP() << "cuBLASLt has no algorithm for T=" << c.T << " R=" << c.R << " K=" << c.K;
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto z = from_bf16(dev.z.download());
  std::vector<double> ref, budget;
  reference(c, in, (c.K / 2.0 + 64) * kF32Unit, ref, budget);
  expect_parity(cat("grouped_out_proj_lt T=", c.T, " G=", c.G, " R=", c.R, " K=", c.K, c.fp8 ? " fp8" : " bf16"), z,
                ref, budget);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GroupedOutProjLtTest,
                         ::testing::Values(GroupedCase{200, 2, 1024, 4096, true},  // Flash groups, a prefill chunk
                                           GroupedCase{200, 2, 1024, 4096, false},
                                           GroupedCase{97, 3, 96, 384, true},  // tile boundaries inside groups
                                           GroupedCase{70, 2, 64, 256, true},  // one 128-row tile spans both groups
                                           GroupedCase{65, 2, 128, 512, false},  // nano
                                           GroupedCase{100, 2, 128, 512, true}));  // nano's FP8 wo_a, GraphDecode's 100-row prompt

}  // namespace
}  // namespace dsv4::cuda::test
