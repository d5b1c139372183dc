// The CUDA backend's per-sequence state (model/forward.h SequenceState): a slot of the KV pool
// (window ring, compressor rings, page-table row, kept MTP streams; kv_pool.h) and the KV blocks it
// holds, its position and the MTP block's, and the speculative protocol's rollback as a
// truncation. The device rows themselves are the step's (cuda_forward.cpp, layer_pass.cpp).
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/kv_pool.h"
#include "model/forward.h"
#include "model/kv_blocks.h"
#include "model/rollback.h"

namespace dsv4::cuda {

// A sequence: a slot (window ring, compressor rings, page-table row, kept streams) and the KV
// blocks it holds; its position, and the MTP block's (§10) with the positions whose final streams
// the slot keeps. Rollback is a truncation down to a floor (cpu/sequence_state.h's rule: a ring
// row a kept position needs is only overwritten by a position kRollbackPositions past it).
class CudaSequenceState final : public SequenceState {
 public:
  CudaSequenceState(KvBlockPool& pool, int32_t* page_mirror, int pages_per_slot, int32_t slot,
                    int64_t max_tokens)
      : pool_(&pool), pages_(page_mirror + int64_t(slot) * pages_per_slot), slot_(slot),
        max_tokens_(max_tokens) {}
  ~CudaSequenceState() override {
    pool_->give_blocks(blocks_);
    pool_->give_slot(slot_);
  }
  int64_t position() const override { return position_; }
  // Stale rows are never read (visibility is by position), so a reset only gives the blocks back.
  void reset() override {
    position_ = floor_ = mtp_position_ = mtp_floor_ = kept_lo_ = kept_hi_ = 0;
    pool_->give_blocks(blocks_);
    uploaded_ = 0;
  }
  int64_t max_tokens() const { return max_tokens_; }
  int32_t slot() const { return slot_; }
  void advance(int64_t n) {
    position_ += n;
    floor_ = std::max(floor_, position_ - kRollbackPositions);
  }
  // Forgets positions [n_tokens, position): KV blocks past n_tokens, the kept streams from there,
  // the MTP rows of positions ≥ n_tokens − 1 (that row paired n_tokens − 1 with a forgotten token).
  void rollback(int64_t n_tokens);

  int64_t mtp_position() const { return mtp_position_; }
  void mtp_advance(int64_t n) {
    mtp_position_ += n;
    mtp_floor_ = std::max(mtp_floor_, mtp_position_ - kRollbackPositions);
  }
  // draft(): its recurrent rows stand on drafted tokens and are forgotten (n ≥ the floor: the
  // caller only goes back over the rows it just fed).
  void mtp_rewind(int64_t n) { mtp_position_ = n; }
  // Positions [pos0, pos0 + n) fed with mtp: the slot keeps the final streams of their last
  // kKeptStreamRows (contiguous with what it kept before, or instead of it).
  void keep(int64_t pos0, int64_t n) {
    kept_lo_ = kept_hi_ == pos0 ? std::max(kept_lo_, pos0 + n - kKeptStreamRows)
                                : std::max(pos0, pos0 + n - kKeptStreamRows);
    kept_hi_ = pos0 + n;
  }
  bool kept(int64_t p) const { return p >= kept_lo_ && p < kept_hi_; }
  // The kept-stream row of position p (KvPool::kept_streams).
  int32_t kept_row(int64_t p) const { return slot_ * kKeptStreamRows + int32_t(p % kKeptStreamRows); }
  bool reserve(int64_t n_tokens) {
    const int64_t need = (n_tokens + kKvBlockTokens - 1) / kKvBlockTokens - int64_t(blocks_.size());
    if (need <= 0) return true;
    const size_t had = blocks_.size();
    if (!pool_->take_blocks(need, blocks_)) return false;
    std::copy(blocks_.begin() + std::ptrdiff_t(had), blocks_.end(), pages_ + had);
    return true;
  }
  // Copies the page-table entries the devices have not seen yet (pinned mirror -> device) to every
  // rank's copy of this slot's row: replica r is device_rows[r] on streams[r].
  void upload_pages(std::span<int32_t* const> device_rows, std::span<const cudaStream_t> streams) {
    DSV4_CHECK(device_rows.size() == streams.size());
    if (uploaded_ == blocks_.size()) return;
    for (size_t r = 0; r < device_rows.size(); ++r)
      DSV4_CUDA_CHECK(cudaMemcpyAsync(device_rows[r] + uploaded_, pages_ + uploaded_,
                                      (blocks_.size() - uploaded_) * sizeof(int32_t), cudaMemcpyHostToDevice,
                                      streams[r]));
    uploaded_ = blocks_.size();
  }

 private:
  KvBlockPool* pool_;
  int32_t* pages_;  // this slot's row of the pinned page-table mirror
  int32_t slot_;
  int64_t position_ = 0, max_tokens_ = 0, floor_ = 0;
  int64_t mtp_position_ = 0, mtp_floor_ = 0, kept_lo_ = 0, kept_hi_ = 0;
  std::vector<int32_t> blocks_;
  size_t uploaded_ = 0;
};

// The CUDA state behind a Forward's SequenceState; Error when another backend made it.
CudaSequenceState& cuda_sequence(SequenceState* s);

}  // namespace dsv4::cuda
