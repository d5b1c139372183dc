// Tests of kernels/embedding.cu: every stream of every token is the token's table row, bit for
// bit (§2), on both the 16-byte and the scalar path, and an out-of-range id gives a NaN row.
#include <cstring>

#include "cuda/kernels/embedding.cuh"
#include "op_parity.h"

namespace dsv4::cuda::test {
namespace {

constexpr uint16_t kBf16QuietNan = 0x7fc0;  // the kernel's NaN row; distinct from the 0xFFFF poison

struct EmbeddingCase {
  int T, n, D, vocab;
  bool bad_ids;
};

class EmbeddingTest : public CudaOpTest, public ::testing::WithParamInterface<EmbeddingCase> {};

TEST_P(EmbeddingTest, CopiesRowIntoEveryStream) {
  const auto c = GetParam();
  const auto table = to_bf16(normals(size_t(c.vocab) * c.D, 0.05f));
  std::vector<int32_t> tokens(static_cast<size_t>(c.T));
  for (auto& t : tokens) t = uniform_int(0, c.vocab - 1);
  if (c.bad_ids) {  // both ends of the valid range and beyond (T >= 5: distinct positions)
    tokens[1] = c.vocab - 1;
    tokens[size_t(c.T) - 2] = 0;
    tokens[0] = -1;
    tokens[size_t(c.T) / 2] = c.vocab;
    tokens[size_t(c.T) - 1] = INT32_MAX;
  }
  DeviceBuffer<uint16_t> d_table(table), d_out(size_t(c.T) * c.n * c.D);
  DeviceBuffer<int32_t> d_tok(tokens);
  d_out.fill_bytes(kPoisonByte);
  EmbeddingParams p;
  p.table = bf16_ptr(d_table);
  p.tokens = d_tok.get();
  p.streams = bf16_ptr(d_out);
  p.T = c.T;
  p.n = c.n;
  p.D = c.D;
  p.vocab = c.vocab;
  launch_embedding(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto out = d_out.download();

  std::vector<uint16_t> ref(out.size());
  for (int t = 0; t < c.T; ++t) {
    const int id = tokens[size_t(t)];
    const bool valid = id >= 0 && id < c.vocab;
    for (int s = 0; s < c.n; ++s)
      for (int d = 0; d < c.D; ++d)
        ref[(size_t(t) * c.n + s) * c.D + d] = valid ? table[size_t(id) * c.D + d] : kBf16QuietNan;
  }
  std::vector<uint8_t> got_bytes(out.size() * 2), ref_bytes(ref.size() * 2);
  std::memcpy(got_bytes.data(), out.data(), got_bytes.size());
  std::memcpy(ref_bytes.data(), ref.data(), ref_bytes.size());
  expect_bytes_equal(cat("embedding T=", c.T, " n=", c.n, " D=", c.D, c.bad_ids ? " bad ids" : ""), got_bytes,
                     ref_bytes);
}

INSTANTIATE_TEST_SUITE_P(Shapes, EmbeddingTest,
                         ::testing::Values(EmbeddingCase{1, 4, 4096, 1000, false},   // Flash decode
                                           EmbeddingCase{9, 4, 7168, 300, true},     // Pro, bad ids
                                           EmbeddingCase{5, 1, 4096, 50, true},      // one stream
                                           EmbeddingCase{6, 4, 36, 70, true},        // D % 8 != 0: scalar path
                                           EmbeddingCase{3, 3, 7, 5, false},         // tiny odd everything
                                           EmbeddingCase{700, 4, 64, 129280, false})); // many tokens, V4 vocab

}  // namespace
}  // namespace dsv4::cuda::test
