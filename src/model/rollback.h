// How far speculative decoding rolls a sequence back (model/forward.h's protocol) and what that
// asks of every backend's per-position state: rings that keep the margin, so a rollback truncates.
#pragma once

#include <cstdint>

#include "model/config.h"
#include "model/forward.h"

namespace dsv4 {

// Positions a sequence can be rolled back by: the verified token and up to kMaxSpeculative drafts.
inline constexpr int64_t kRollbackPositions = kMaxSpeculative + 1;

// Rows of a window ring (§4.3, §5.5): the W−1 earlier positions a query reads, its own, and the
// rollback margin, so that a rolled-back position's window is intact (a row a kept position needs
// is only overwritten by a position at least kRollbackPositions past it).
inline int64_t window_ring_rows(int64_t sliding_window) { return sliding_window + kRollbackPositions; }

// Rows of a compressor's a / z ring (§5.5): the window being filled and (CSA) the previous one's A
// half, plus the same margin.
inline int64_t compressor_ring_rows(int64_t ratio) {
  return compressor_overlap(ratio) * ratio + kRollbackPositions;
}

}  // namespace dsv4
