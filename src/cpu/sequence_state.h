// CpuSequenceState: the CPU backend's per-sequence streaming state (§5.5, §13) — position, and per
// layer the window ring and compressor/indexer state (attention.h) — reset per sequence.
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
  void advance(int64_t n) { position_ += n; }
  std::vector<AttentionState> layers;
  std::vector<AttentionState> mtp;  // the MTP block's window (its own positions, §10)
  int64_t mtp_position = 0;

 private:
  int64_t position_ = 0;
  int64_t max_tokens_ = 0;
  KvBlockPool* pool_ = nullptr;
  int32_t slot_ = -1;
  std::vector<int32_t> blocks_;
};

}  // namespace dsv4
