// CpuSequenceState: the CPU backend's per-sequence streaming state (§5.5, §13) — position, and per
// layer the window ring and compressor/indexer state (attention.h), the MTP block's own window and
// the main model's last final streams (§10) — reset per sequence, rolled back by truncation.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/attention.h"
#include "model/config.h"
#include "model/forward.h"
#include "model/kv_blocks.h"

namespace dsv4 {

// Per-sequence state (§5.5, §13): one AttentionState per main layer and per MTP block. It holds a
// slot and KV blocks of the backend's pool (accounting only: the data lives in the vectors) and
// gives them back on reset / destruction; the pool must outlive it.
//
// Rollback (model/forward.h's speculative protocol): every ring keeps kRollbackPositions rows
// beyond what its next position reads and compressed entries are appended by position, so
// forgetting positions is a truncation. It is exact for any target ≥ rollback_floor(): a ring row
// that a target position needs is only overwritten by a position ≥ target + kRollbackPositions,
// and feeding that position raised the floor above the target.
class CpuSequenceState final : public SequenceState {
 public:
  CpuSequenceState(const ModelConfig& cfg, int64_t max_tokens, KvBlockPool& pool, int32_t slot);
  ~CpuSequenceState() override;
  CpuSequenceState(const CpuSequenceState&) = delete;
  CpuSequenceState& operator=(const CpuSequenceState&) = delete;
  int64_t position() const override { return position_; }
  void reset() override;
  // Holds blocks for n tokens in all (KvBlockPool's rule: false, nothing taken, when short).
  bool reserve(int64_t n_tokens);

  int64_t max_tokens() const { return max_tokens_; }
  // The main layers consumed n more positions.
  void advance(int64_t n);
  // Forgets positions [n_tokens, position): compressed entries and indexer keys of windows that
  // closed there, KV blocks past n_tokens, the kept streams from n_tokens on; the MTP block's
  // position becomes at most n_tokens − 1. Error when n_tokens is past the position or below the
  // floor.
  void rollback(int64_t n_tokens);
  int64_t rollback_floor() const { return floor_; }

  std::vector<AttentionState> layers;

  // The MTP block (§10): its window state (its own positions: position t pairs the main model's
  // final streams at t with the token at t + 1) and how many positions it has consumed.
  std::vector<AttentionState> mtp;
  int64_t mtp_position() const { return mtp_position_; }
  void mtp_advance(int64_t n);
  // Forgets the MTP positions from n on (the same floor rule, its own floor); n ≤ mtp_position.
  void mtp_rollback(int64_t n);

  // The main model's final (pre-HC_head) streams of the last kKeptStreams positions it fed with
  // ForwardItem::mtp: the MTP input of a position whose next token comes later. One more than the
  // rollback reach, so that position n − 1 is still kept after any rollback to n.
  static constexpr int64_t kKeptStreams = kRollbackPositions + 1;
  void keep_streams(int64_t pos0, const float* X /* [T, n, D] */, int64_t T);
  const float* kept_streams(int64_t pos) const;  // [n, D]; null when not kept

 private:
  int64_t position_ = 0, floor_ = 0;
  int64_t mtp_position_ = 0, mtp_floor_ = 0;
  int64_t stream_width_ = 0;  // n·D
  std::vector<float> kept_;   // [kKeptStreams, n·D], row = position mod kKeptStreams
  int64_t kept_lo_ = 0, kept_hi_ = 0;  // kept positions [lo, hi)
  int64_t max_tokens_ = 0;
  KvBlockPool* pool_ = nullptr;
  int32_t slot_ = -1;
  std::vector<int32_t> blocks_;
};

}  // namespace dsv4
