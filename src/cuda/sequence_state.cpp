// CudaSequenceState (sequence_state.h): the rollback and the backend check.
#include "cuda/sequence_state.h"

#include "util/error.h"

namespace dsv4::cuda {

void CudaSequenceState::rollback(int64_t n_tokens) {
  if (n_tokens > position_ || n_tokens < floor_)
    fail("rollback to ", n_tokens, " tokens: the sequence holds ", position_, " and can go back to ", floor_,
         " at the earliest (", kRollbackPositions, " positions behind its furthest feed)");
  const int64_t mtp_target = std::min(mtp_position_, std::max<int64_t>(n_tokens - 1, 0));
  if (mtp_target < mtp_floor_)
    fail("rollback to ", n_tokens, " tokens: the MTP block can go back to ", mtp_floor_, " at the earliest");
  position_ = n_tokens;
  const size_t keep_blocks = size_t((n_tokens + kKvBlockTokens - 1) / kKvBlockTokens);
  if (blocks_.size() > keep_blocks) {
    std::vector<int32_t> extra(blocks_.begin() + std::ptrdiff_t(keep_blocks), blocks_.end());
    blocks_.resize(keep_blocks);
    pool_->give_blocks(extra);
    uploaded_ = std::min(uploaded_, keep_blocks);
  }
  kept_hi_ = std::min(kept_hi_, n_tokens);
  kept_lo_ = std::min(kept_lo_, kept_hi_);
  mtp_position_ = mtp_target;
}

CudaSequenceState& cuda_sequence(SequenceState* s) {
  auto* c = dynamic_cast<CudaSequenceState*>(s);
  if (!c) fail("forward: the sequence state was not created by the CUDA backend");
  return *c;
}

}  // namespace dsv4::cuda
