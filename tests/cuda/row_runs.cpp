// row_runs (src/cuda/row_runs.h): the row classes the batch-invariant kernel choices follow.
// Host-only: runs without a GPU.
#include <gtest/gtest.h>

#include <vector>

#include "cuda/row_runs.h"
#include "cuda/step.h"
#include "util/error.h"

namespace dsv4::cuda::test {
namespace {

std::vector<RowRun> runs_of(const std::vector<RowRange>& segments, int T, bool long_chunks_prefill = true) {
  return row_runs(segments, T, [&](int) { return long_chunks_prefill; });
}

TEST(RowRuns, NoSegmentsIsOneDecodeRun) {
  EXPECT_EQ(runs_of({}, 37), (std::vector<RowRun>{{0, 37, false}}));
}

// As run_passes lays a pass out: the short chunks' rows first in slices of up to
// kInvariantSliceRows, then each long chunk alone. The slices merge into one decode run; each long
// chunk is its own prefill run, even next to another (the attention gathers one chunk's keys).
TEST(RowRuns, LongChunksAreOnePrefillRunEach) {
  const int L = kInvariantSliceRows;
  const std::vector<RowRange> segments = {{0, L}, {L, 5}, {L + 5, L + 1}, {2 * L + 6, 300}};
  EXPECT_EQ(runs_of(segments, 2 * L + 306),
            (std::vector<RowRun>{{0, L + 5, false}, {L + 5, L + 1, true}, {2 * L + 6, 300, true}}));
  // A chunk of exactly kInvariantSliceRows rows is short.
  EXPECT_EQ(runs_of({{0, L}}, L), (std::vector<RowRun>{{0, L, false}}));
}

TEST(RowRuns, LongChunksOutsideTheClassJoinTheDecodeRuns) {
  const std::vector<RowRange> segments = {{0, 3}, {3, 200}, {203, 100}};
  EXPECT_EQ(runs_of(segments, 303, false), (std::vector<RowRun>{{0, 303, false}}));
  // Only the chunks the predicate takes.
  const auto runs = row_runs(segments, 303, [](int n) { return n > 150; });
  EXPECT_EQ(runs, (std::vector<RowRun>{{0, 3, false}, {3, 200, true}, {203, 100, false}}));
}

TEST(RowRuns, RowsAfterTheLastSegmentAreDecodeRows) {
  EXPECT_EQ(runs_of({{0, 100}}, 104), (std::vector<RowRun>{{0, 100, true}, {100, 4, false}}));
}

TEST(RowRuns, SegmentsThatDoNotTileThePassAreRefused) {
  EXPECT_THROW(runs_of({{1, 10}}, 20), InternalError);
  EXPECT_THROW(runs_of({{0, 10}, {11, 5}}, 20), InternalError);
  EXPECT_THROW(runs_of({{0, 30}}, 20), InternalError);
}

}  // namespace
}  // namespace dsv4::cuda::test
