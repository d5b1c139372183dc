// Tests of kernels/gather_rows.cu: dst row i is src row index[i] bit for bit, or for a negative
// index +0 everywhere (an expert-parallel rank's picks of other ranks' experts) or, with
// keep_negative, what was there (the host tier's second pass), on poisoned destinations so that an
// unwritten row shows.
#include <cstring>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/kernels/gather_rows.cuh"
#include "op_parity.h"

namespace dsv4::cuda::test {
namespace {

class GatherRowsTest : public CudaOpTest {};

TEST_F(GatherRowsTest, CopiesIndexedRowsAndZerosOrKeepsNegativeOnes) {
  for (const bool keep : {false, true})
  for (const int64_t width : {8, 4096, 4 * 4096 + 8}) {
    const int src_rows = uniform_int(1, 40), n = uniform_int(1, 300);
    const std::vector<uint16_t> src = to_bf16(normals(size_t(src_rows * width)));
    std::vector<int32_t> index(static_cast<size_t>(n));
    for (int32_t& i : index) i = uniform_int(0, 3) == 0 ? -uniform_int(1, 5) : uniform_int(0, src_rows - 1);
    const uint16_t poison = uint16_t(kPoisonByte | (kPoisonByte << 8));
    std::vector<uint16_t> want(size_t(n * width), keep ? poison : 0);
    for (int i = 0; i < n; ++i)
      if (index[size_t(i)] >= 0)
        std::memcpy(&want[size_t(i * width)], &src[size_t(index[size_t(i)] * width)], size_t(width) * 2);

    DeviceBuffer<uint16_t> d_src(src), d_dst(size_t(n * width));
    DeviceBuffer<int32_t> d_index(index);
    DSV4_CUDA_CHECK(cudaMemset(d_dst.get(), kPoisonByte, size_t(n * width) * 2));
    GatherRowsParams p;
    p.src = bf16_ptr(d_src);
    p.index = d_index.get();
    p.dst = bf16_ptr(d_dst);
    p.n = n;
    p.width = width;
    p.keep_negative = keep;
    launch_gather_rows(p, nullptr);
    std::vector<uint16_t> got(size_t(n * width));
    DSV4_CUDA_CHECK(cudaMemcpy(got.data(), d_dst.get(), got.size() * 2, cudaMemcpyDeviceToHost));
    std::vector<uint8_t> g(got.size() * 2), w(want.size() * 2);
    std::memcpy(g.data(), got.data(), g.size());
    std::memcpy(w.data(), want.data(), w.size());
    expect_bytes_equal(cat("gather_rows width=", width, " n=", n, keep ? " keep_negative" : ""), g, w);
  }
}

}  // namespace
}  // namespace dsv4::cuda::test
