// CpuSequenceState: the CPU backend's per-sequence streaming state (§5.5, §13) — position, and per
// layer the window ring and compressor/indexer state (attention.h) — reset per sequence.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/attention.h"
#include "model/config.h"
#include "model/forward.h"

namespace dsv4 {

// Per-sequence state (§5.5, §13): one AttentionState per main layer and per MTP block.
class CpuSequenceState final : public SequenceState {
 public:
  CpuSequenceState(const ModelConfig& cfg, int64_t max_tokens);
  int64_t position() const override { return position_; }
  void reset() override;

  int64_t max_tokens() const { return max_tokens_; }
  void advance(int64_t n) { position_ += n; }
  std::vector<AttentionState> layers;
  std::vector<AttentionState> mtp;  // the MTP block's window (its own positions, §10)
  int64_t mtp_position = 0;

 private:
  int64_t position_ = 0;
  int64_t max_tokens_ = 0;
};

}  // namespace dsv4
