// Host-side bookkeeping of a paged KV cache (design.md "Paged KV pools"): which block ids and
// sequence slots are free. The memory behind the ids is a backend's; the CPU backend keeps the
// same accounting over its own vectors so that schedulers behave the same on both.
#pragma once

#include <cstdint>
#include <vector>

namespace dsv4 {

// Token positions per KV block: vLLM's granularity for V4, where a block of 256 positions holds
// 64 CSA entries, 64 indexer keys and 2 HCA entries of every compressed layer (§13), so one page
// table per sequence serves every layer.
inline constexpr int64_t kKvBlockTokens = 256;

class KvBlockPool {
 public:
  KvBlockPool(int64_t n_blocks, int64_t n_slots);

  int32_t take_slot();  // −1 when every slot is taken
  void give_slot(int32_t slot);
  // Appends n free block ids to `into`; false, taking nothing, when fewer than n are free.
  bool take_blocks(int64_t n, std::vector<int32_t>& into);
  // Returns them all and clears `ids`; an id out of range or already free (a double free, which
  // would hand one block to two sequences) is an InternalError and changes nothing.
  void give_blocks(std::vector<int32_t>& ids);

  int64_t total_blocks() const { return total_blocks_; }
  int64_t free_blocks() const { return int64_t(free_blocks_.size()); }
  int64_t total_slots() const { return total_slots_; }
  int64_t free_slots() const { return int64_t(free_slots_.size()); }

 private:
  int64_t total_blocks_ = 0, total_slots_ = 0;
  std::vector<int32_t> free_blocks_, free_slots_;  // stacks: the most recently freed is reused first
  std::vector<bool> block_is_free_, slot_is_free_;  // per id: a second give_* of it is refused
};

}  // namespace dsv4
