// CpuSequenceState: allocation and reset. The per-layer contents are filled lazily by
// attention.cpp / compressor.cpp on first use, so a reset is just clearing them.
#include "cpu/sequence_state.h"

namespace dsv4 {

CpuSequenceState::CpuSequenceState(const ModelConfig& cfg, int64_t max_tokens)
    : layers(size_t(cfg.num_hidden_layers)),
      mtp(size_t(cfg.mtp_layers.size())),
      max_tokens_(max_tokens) {}

void CpuSequenceState::reset() {
  for (auto& l : layers) l.reset();
  for (auto& l : mtp) l.reset();
  position_ = 0;
  mtp_position = 0;
}

}  // namespace dsv4
