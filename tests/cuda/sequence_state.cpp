// The CUDA backend's per-sequence bookkeeping (src/cuda/sequence_state.h), host-only so it runs
// in CI without a GPU: over random schedules of the speculative protocol (feeds of 1–300 tokens
// with and without mtp, rollbacks of up to kRollbackPositions, drafts' recurrent MTP rows), the
// KV blocks a sequence holds follow its position, a rollback is allowed exactly down to
// kRollbackPositions behind the furthest feed, the kept final streams are exactly the last
// contiguous positions fed with mtp (at most kKeptStreamRows), and the MTP position follows
// model/forward.h's rule — each against a reference model written out here with plain sets.
// The device side of the same protocol is tests/cuda/speculative.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

#include "cuda/sequence_state.h"
#include "support/test_util.h"
#include "util/error.h"

namespace dsv4::cuda {
namespace {

// What the state should be, kept the naive way.
struct Reference {
  int64_t position = 0, furthest = 0, mtp = 0, mtp_furthest = 0;
  std::set<int64_t> kept;  // positions whose final streams the slot holds
  void feed(int64_t n, bool with_mtp) {
    if (with_mtp) {
      if (!kept.empty() && *kept.rbegin() != position - 1) kept.clear();  // not contiguous: replaced
      for (int64_t p = position; p < position + n; ++p) kept.insert(p);
      while (int64_t(kept.size()) > kKeptStreamRows) kept.erase(kept.begin());
    }
    position += n;
    furthest = std::max(furthest, position);
  }
};

int64_t blocks_for(int64_t n) { return (n + kKvBlockTokens - 1) / kKvBlockTokens; }

TEST(CudaSequenceStateHost, RandomSchedulesFollowTheProtocol) {
  test::Rng rng(1);
  constexpr int64_t kBlocks = 64, kMaxTokens = kBlocks * kKvBlockTokens;
  int64_t checked_rollbacks = 0, refused = 0;
  for (int trial = 0; trial < 20; ++trial) {
    KvBlockPool pool(kBlocks, 2);
    std::vector<int32_t> mirror(size_t(2 * kBlocks), -1);
    const int32_t slot = pool.take_slot();
    CudaSequenceState s(pool, mirror.data(), int(kBlocks), slot, kMaxTokens);
    Reference ref;
    while (ref.position < kMaxTokens - 400) {
      const int op = int(rng.integer(0, 9));
      if (op < 6) {  // a feed: a prefill chunk or a verify step
        const int64_t n = op == 0 ? rng.integer(1, 300) : rng.integer(1, kRollbackPositions);
        const bool with_mtp = rng.integer(0, 3) > 0;
        ASSERT_TRUE(s.reserve(s.position() + n));
        const int64_t pos0 = s.position();
        s.advance(n);
        if (with_mtp) s.keep(pos0, n);
        ref.feed(n, with_mtp);
        // The MTP block consumes what has a next token (forward.h): it ends one behind.
        if (with_mtp) {
          s.mtp_advance(s.position() - 1 - s.mtp_position());
          ref.mtp = ref.position - 1;
          ref.mtp_furthest = std::max(ref.mtp_furthest, ref.mtp);
        }
      } else if (op < 9) {  // a rollback, sometimes past what is allowed
        const int64_t back = rng.integer(0, kRollbackPositions + 1);
        const int64_t target = s.position() - back;
        const int64_t mtp_target = std::min(ref.mtp, std::max<int64_t>(target - 1, 0));
        const bool allowed = target >= 0 && target >= ref.furthest - kRollbackPositions &&
                             mtp_target >= ref.mtp_furthest - kRollbackPositions;
        if (!allowed) {
          EXPECT_THROW(s.rollback(target), Error) << "rollback to " << target << " from " << s.position();
          ++refused;
          continue;
        }
        s.rollback(target);
        ++checked_rollbacks;
        ref.position = target;
        ref.mtp = mtp_target;
        ref.kept.erase(ref.kept.lower_bound(target), ref.kept.end());
      } else if (s.position() >= 1 && s.mtp_position() == s.position() - 1) {  // a draft of 1–3
        const int64_t P = s.position(), k = rng.integer(1, kMaxSpeculative);
        s.mtp_advance(k);  // rows P − 1 … P + k − 2
        ref.mtp_furthest = std::max(ref.mtp_furthest, P - 1 + k);
        s.mtp_rewind(P);   // the recurrent rows are forgotten
        ref.mtp = P;
      }
      ASSERT_EQ(s.position(), ref.position);
      ASSERT_EQ(s.mtp_position(), ref.mtp);
      ASSERT_EQ(pool.free_blocks(), kBlocks - blocks_for(std::max(ref.position, int64_t(0))))
          << "the blocks do not follow the position " << ref.position;
      for (int64_t p = std::max<int64_t>(0, ref.position - 12); p < ref.position + 2; ++p)
        ASSERT_EQ(s.kept(p), ref.kept.count(p) == 1) << "position " << p << " of " << ref.position;
    }
    s.reset();
    EXPECT_EQ(pool.free_blocks(), kBlocks);
    EXPECT_EQ(s.position(), 0);
    EXPECT_FALSE(s.kept(0));
  }
  std::printf("[sequence state] %lld rollbacks checked, %lld refused\n", (long long)checked_rollbacks,
              (long long)refused);
  EXPECT_GT(checked_rollbacks, 100);
  EXPECT_GT(refused, 10);
}

// Kept-stream rows: one per position modulo kKeptStreamRows inside the slot's own rows.
TEST(CudaSequenceStateHost, KeptRowsStayInTheSlot) {
  KvBlockPool pool(4, 3);
  std::vector<int32_t> mirror(12, -1);
  pool.take_slot();
  const int32_t slot = pool.take_slot();
  CudaSequenceState s(pool, mirror.data(), 4, slot, 1024);
  std::set<int32_t> rows;
  for (int64_t p = 0; p < 3 * kKeptStreamRows; ++p) {
    const int32_t r = s.kept_row(p);
    EXPECT_GE(r, slot * kKeptStreamRows);
    EXPECT_LT(r, (slot + 1) * kKeptStreamRows);
    rows.insert(r);
  }
  EXPECT_EQ(int64_t(rows.size()), kKeptStreamRows);
}

}  // namespace
}  // namespace dsv4::cuda
