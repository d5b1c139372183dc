// CpuSequenceState: allocation, KV accounting and reset. The per-layer contents are filled lazily
// by attention.cpp / compressor.cpp on first use, so a reset is just clearing them.
#include "cpu/sequence_state.h"

namespace dsv4 {

CpuSequenceState::CpuSequenceState(const ModelConfig& cfg, int64_t max_tokens, KvBlockPool& pool,
                                   int32_t slot)
    : layers(size_t(cfg.num_hidden_layers)),
      mtp(size_t(cfg.mtp_layers.size())),
      max_tokens_(max_tokens),
      pool_(&pool),
      slot_(slot) {}

CpuSequenceState::~CpuSequenceState() {
  pool_->give_blocks(blocks_);
  pool_->give_slot(slot_);
}

bool CpuSequenceState::reserve(int64_t n_tokens) {
  const int64_t need = (n_tokens + kKvBlockTokens - 1) / kKvBlockTokens - int64_t(blocks_.size());
  return need <= 0 || pool_->take_blocks(need, blocks_);
}

void CpuSequenceState::reset() {
  for (auto& l : layers) l.reset();
  for (auto& l : mtp) l.reset();
  position_ = 0;
  mtp_position = 0;
  pool_->give_blocks(blocks_);
}

}  // namespace dsv4
