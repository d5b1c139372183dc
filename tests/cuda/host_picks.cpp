// Tests of kernels/host_picks.cu: each pick of the host's experts among the real rows takes the
// host's row (read in place from mapped pinned memory) bit for bit; every other pick keeps what
// the GPU's experts left there, padding rows included.
#include <cstring>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "cuda/kernels/host_picks.cuh"
#include "op_parity.h"

namespace dsv4::cuda::test {
namespace {

class HostPicksTest : public CudaOpTest {};

TEST_F(HostPicksTest, TakesTheHostsPicksAndKeepsTheRest) {
  for (const int D : {8, 256, 4096}) {
    const int T = uniform_int(1, 70), k = uniform_int(1, 8), E = uniform_int(2, 64);
    const int first = uniform_int(1, E - 1), n_real = uniform_int(0, T);
    const size_t n = size_t(T) * size_t(k) * size_t(D);
    std::vector<int32_t> idx(size_t(T * k));
    for (int32_t& e : idx) e = uniform_int(0, E - 1);
    const std::vector<uint16_t> gpu = to_bf16(normals(n)), host = to_bf16(normals(n));
    std::vector<uint16_t> want = gpu;
    for (int p = 0; p < T * k; ++p)
      if (p / k < n_real && idx[size_t(p)] >= first)
        std::memcpy(&want[size_t(p) * D], &host[size_t(p) * D], size_t(D) * 2);

    PinnedBuffer<uint16_t> h(n);
    std::memcpy(h.get(), host.data(), n * 2);
    DeviceBuffer<uint16_t> picks(gpu);
    DeviceBuffer<int32_t> d_idx(idx), d_n_real(std::vector<int32_t>{n_real});
    TakeHostPicksParams p;
    p.host = reinterpret_cast<const __nv_bfloat16*>(h.device());
    p.expert_idx = d_idx.get();
    p.n_real = d_n_real.get();
    p.picks = bf16_ptr(picks);
    p.T = T;
    p.k = k;
    p.D = D;
    p.first = first;
    p.end = E;
    launch_take_host_picks(p, nullptr);
    const std::vector<uint16_t> got = picks.download();
    std::vector<uint8_t> g(n * 2), w(n * 2);
    std::memcpy(g.data(), got.data(), g.size());
    std::memcpy(w.data(), want.data(), w.size());
    expect_bytes_equal(cat("take_host_picks T=", T, " k=", k, " D=", D, " experts [", first, ", ", E, ") n_real=", n_real),
                       g, w);
  }
}

}  // namespace
}  // namespace dsv4::cuda::test
