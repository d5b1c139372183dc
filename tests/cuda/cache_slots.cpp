// kernels/cache_slots.cu against the slot arithmetic written out on the host: window rows at
// position mod ring, compressor entries after the ring, −1 passed through.
#include "cuda/kernels/cache_slots.cuh"
#include "op_parity.h"

namespace dsv4::cuda::test {
namespace {

class CacheSlotsTest : public CudaOpTest {};

TEST_F(CacheSlotsTest, WindowAndEntrySlots) {
  for (const auto& [base, modulo] : {std::pair{0, 256}, std::pair{256, 0}, std::pair{192, 0}}) {
    const int n = uniform_int(1, 300);
    std::vector<int32_t> in(static_cast<size_t>(n));
    for (auto& v : in) v = uniform_int(0, 4) == 0 ? -1 : uniform_int(0, 1 << 20);
    DeviceBuffer<int32_t> d_in(in), d_out(in.size());
    d_out.fill_bytes(0x7f);  // poison: a huge positive slot, never a valid answer
    launch_cache_slots({d_in.get(), d_out.get(), n, base, modulo}, nullptr);
    const auto out = d_out.download();
    for (int i = 0; i < n; ++i) {
      const int32_t v = in[size_t(i)];
      const int32_t want = v < 0 ? -1 : base + (modulo > 0 ? v % modulo : v);
      ASSERT_EQ(out[size_t(i)], want) << "i=" << i << " in=" << v << " base=" << base
                                      << " modulo=" << modulo;
    }
  }
}

}  // namespace
}  // namespace dsv4::cuda::test
