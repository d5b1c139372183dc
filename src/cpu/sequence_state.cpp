// CpuSequenceState: allocation, KV accounting, reset and rollback. The per-layer contents are
// filled lazily by attention.cpp / compressor.cpp on first use, so a reset is just clearing them.
#include "cpu/sequence_state.h"

#include <algorithm>

#include "util/error.h"

namespace dsv4 {

CpuSequenceState::CpuSequenceState(const ModelConfig& cfg, int64_t max_tokens, KvBlockPool& pool,
                                   int32_t slot)
    : layers(size_t(cfg.num_hidden_layers)),
      mtp(size_t(cfg.mtp_layers.size())),
      stream_width_(cfg.hc_mult * cfg.hidden_size),
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
  position_ = floor_ = 0;
  mtp_position_ = mtp_floor_ = 0;
  kept_.clear();
  kept_lo_ = kept_hi_ = 0;
  pool_->give_blocks(blocks_);
}

void CpuSequenceState::advance(int64_t n) {
  position_ += n;
  floor_ = std::max(floor_, position_ - kRollbackPositions);
}

void CpuSequenceState::rollback(int64_t n_tokens) {
  if (n_tokens > position_ || n_tokens < floor_)
    fail("rollback to ", n_tokens, " tokens: the sequence holds ", position_,
         " and can go back to ", floor_, " at the earliest (", kRollbackPositions,
         " positions behind its furthest feed)");
  for (auto& l : layers) l.truncate(n_tokens);
  position_ = n_tokens;
  const int64_t keep_blocks = (n_tokens + kKvBlockTokens - 1) / kKvBlockTokens;
  if (int64_t(blocks_.size()) > keep_blocks) {
    std::vector<int32_t> extra(blocks_.begin() + keep_blocks, blocks_.end());
    blocks_.resize(size_t(keep_blocks));
    pool_->give_blocks(extra);
  }
  kept_hi_ = std::min(kept_hi_, n_tokens);
  kept_lo_ = std::min(kept_lo_, kept_hi_);
  // The MTP row of position n_tokens − 1 paired it with the token at n_tokens: forgotten too.
  mtp_rollback(std::min(mtp_position_, std::max<int64_t>(n_tokens - 1, 0)));
}

void CpuSequenceState::mtp_advance(int64_t n) {
  mtp_position_ += n;
  mtp_floor_ = std::max(mtp_floor_, mtp_position_ - kRollbackPositions);
}

void CpuSequenceState::mtp_rollback(int64_t n) {
  if (n > mtp_position_ || n < mtp_floor_)
    fail("MTP rollback to ", n, ": the MTP block is at ", mtp_position_, " and can go back to ",
         mtp_floor_, " at the earliest");
  for (auto& l : mtp) l.truncate(n);
  mtp_position_ = n;
}

void CpuSequenceState::keep_streams(int64_t pos0, const float* X, int64_t T) {
  const int64_t K = kKeptStreams, w = stream_width_;
  if (kept_.empty()) kept_.assign(size_t(K * w), 0.0f);
  const int64_t first = std::max<int64_t>(0, T - K);
  for (int64_t r = first; r < T; ++r)
    std::copy(X + r * w, X + (r + 1) * w, kept_.data() + ((pos0 + r) % K) * w);
  // Contiguous with what is kept: older rows survive until their slots are reused.
  const int64_t lo = (kept_hi_ == pos0 && kept_hi_ > kept_lo_) ? kept_lo_ : pos0;
  kept_lo_ = std::max(lo, pos0 + T - K);
  kept_hi_ = pos0 + T;
}

const float* CpuSequenceState::kept_streams(int64_t pos) const {
  if (pos < kept_lo_ || pos >= kept_hi_) return nullptr;
  return kept_.data() + (pos % kKeptStreams) * stream_width_;
}

}  // namespace dsv4
