// kernels/cache_slots.cu against the row arithmetic written out on the host (cache_slots.cuh):
// window rows to the pass's own rows and, for the last ring_rows positions of each chunk, to the
// slot's ring (window-sized and window + rollback margin); compressed entries through the page
// table; padding rows and −1 entries give −1.
#include "cuda/kernels/cache_slots.cuh"
#include "model/rollback.h"
#include "op_parity.h"
#include "step_layout.h"
#include "util/error.h"

namespace dsv4::cuda::test {
namespace {

class CacheSlotsTest : public CudaOpTest {};

TEST_F(CacheSlotsTest, WindowRowsGoToThePassAndTheRing) {
  for (int trial = 0; trial < 8; ++trial) {
    // Rings of the window alone and of the window + the rollback margin the pool adds
    // (model/rollback.h kRollbackPositions); window 4: chunks longer than the ring.
    const int window = trial % 2 ? 128 : 4;
    const int ring_rows = window + (trial / 2 % 2 ? int(kRollbackPositions) : 0);
    const StepLayout L = random_step_layout(rng, uniform_int(1, 12), 300, 5000, 16, uniform_int(0, 5));
    const DeviceStepLayout D(L);
    const int n = L.rows(), pass_base = uniform_int(0, 1000), ring_base = uniform_int(0, 1000);
    DeviceBuffer<int32_t> d_pass(static_cast<size_t>(n)), d_ring(static_cast<size_t>(n));
    d_pass.fill_bytes(0x7f);  // poison: a huge positive row, never a valid answer
    d_ring.fill_bytes(0x7f);
    WindowSlotParams p;
    p.rows = D.rows();
    p.pass_slot = d_pass.get();
    p.ring_slot = d_ring.get();
    p.n = n;
    p.pass_base = pass_base;
    p.ring_base = ring_base;
    p.ring_rows = ring_rows;
    launch_window_slots(p, nullptr);
    const auto pass = d_pass.download(), ring = d_ring.download();
    for (int r = 0; r < n; ++r) {
      const int t = L.pos[size_t(r)];
      const int32_t want_pass = t < 0 ? -1 : pass_base + r;
      const int last_pos = L.pos[size_t(L.last[size_t(r)])];
      const int32_t want_ring =
          t < 0 || last_pos - t >= ring_rows ? -1 : ring_base + L.slot[size_t(r)] * ring_rows + t % ring_rows;
      ASSERT_EQ(pass[size_t(r)], want_pass) << "row " << r;
      ASSERT_EQ(ring[size_t(r)], want_ring) << "row " << r << " pos " << t << " last " << last_pos
                                            << " ring_rows " << ring_rows;
    }
  }
}

TEST_F(CacheSlotsTest, EntriesGoThroughThePageTable) {
  for (const int per_block : {64, 2}) {  // CSA and HCA entries per 256-position block
    const StepLayout L = random_step_layout(rng, uniform_int(1, 12), 300, 20000, 16, uniform_int(0, 5));
    const DeviceStepLayout D(L);
    const int n = L.rows(), base = uniform_int(0, 5000);
    std::vector<int32_t> idx(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
      const int t = L.pos[size_t(r)];
      const int ratio = 256 / per_block;
      idx[size_t(r)] = t >= 0 && (t + 1) % ratio == 0 ? (t + 1) / ratio - 1 : -1;  // §5.4
    }
    DeviceBuffer<int32_t> d_idx(idx), d_out(static_cast<size_t>(n));
    d_out.fill_bytes(0x7f);
    EntrySlotParams p;
    p.rows = D.rows();
    p.pages = D.table();
    p.entry_idx = d_idx.get();
    p.out = d_out.get();
    p.n = n;
    p.base = base;
    p.per_block = per_block;
    launch_entry_slots(p, nullptr);
    const auto out = d_out.download();
    for (int r = 0; r < n; ++r) {
      const int32_t j = idx[size_t(r)];
      const int32_t want = j < 0 ? -1 : base + L.entry_row(L.slot[size_t(r)], j, per_block);
      ASSERT_EQ(out[size_t(r)], want) << "row " << r << " entry " << j << " per_block " << per_block;
    }
  }
}

// The launcher refuses a ring of no rows before anything touches the device (host pointers
// suffice: the checks fire first). Host-only: runs without a GPU.
TEST(WindowSlotsArgs, RejectsAnEmptyRing) {
  std::vector<int32_t> pos(1, 0), slot(1, 0), chunk(1, 0), out(2);
  WindowSlotParams p;
  p.rows = {pos.data(), slot.data(), chunk.data(), chunk.data()};
  p.pass_slot = out.data();
  p.ring_slot = out.data() + 1;
  p.n = 1;
  p.ring_rows = 0;
  EXPECT_THROW(launch_window_slots(p, nullptr), InternalError);
}

}  // namespace
}  // namespace dsv4::cuda::test
