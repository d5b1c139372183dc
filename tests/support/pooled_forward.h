// The KV side of the tests' fake backends (tests/engine's scheduler and speculative tests, the
// server tests' scripted backend): a real KvBlockPool behind sequences that only record the ids
// fed to them, so the scheduler's admission, preemption and page accounting run against the
// engine's own pool while the test decides the logits.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/forward.h"
#include "model/kv_blocks.h"
#include "util/error.h"

namespace dsv4::test {

// A sequence that holds a slot and blocks of the pool and gives them back when reset or destroyed.
struct PooledSequence : SequenceState {
  PooledSequence(KvBlockPool& p, int32_t s) : pool(&p), slot(s) {}
  ~PooledSequence() override {
    pool->give_blocks(blocks);
    pool->give_slot(slot);
  }
  int64_t position() const override { return int64_t(ids.size()); }
  void reset() override {
    ids.clear();
    pool->give_blocks(blocks);
  }
  KvBlockPool* pool;
  int32_t slot;
  std::vector<int32_t> blocks;
  std::vector<int32_t> ids;
};

// Config (vocabulary and EOS), sequence creation and block reservation over the pool; a test
// derives its forward (and Seq, a PooledSequence) from it.
template <class Seq>
class PooledForward : public Forward {
 public:
  PooledForward(int64_t vocab, int32_t eos, int64_t block_tokens, int64_t blocks, int64_t slots, int64_t ctx)
      : pool_(blocks, slots) {
    cfg_.vocab_size = vocab;
    cfg_.eos_token_id = eos;
    info_ = {block_tokens, blocks, blocks, slots, slots, ctx};
  }
  const ModelConfig& config() const override { return cfg_; }
  std::unique_ptr<SequenceState> new_sequence(int64_t max_tokens) override {
    if (max_tokens > info_.max_context) fail("too long");
    const int32_t slot = pool_.take_slot();
    if (slot < 0) fail("no slot");
    return std::make_unique<Seq>(pool_, slot);
  }
  KvCacheInfo kv_cache() const override {
    KvCacheInfo k = info_;
    k.free_blocks = pool_.free_blocks();
    k.free_sequences = pool_.free_slots();
    return k;
  }
  bool reserve(SequenceState& s, int64_t n) override {
    auto& f = static_cast<Seq&>(s);
    const int64_t need = info_.blocks_for(n) - int64_t(f.blocks.size());
    return need <= 0 || pool_.take_blocks(need, f.blocks);
  }

 protected:
  ModelConfig cfg_;
  KvCacheInfo info_;
  KvBlockPool pool_;
};

}  // namespace dsv4::test
