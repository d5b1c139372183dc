// KvBlockPool (kv_blocks.h): two free lists, and a free flag per id so that an id given back twice
// (which would later hand one block to two sequences) fails at once instead of corrupting KV.
#include "model/kv_blocks.h"

#include <algorithm>

#include "util/error.h"

namespace dsv4 {

KvBlockPool::KvBlockPool(int64_t n_blocks, int64_t n_slots)
    : total_blocks_(n_blocks), total_slots_(n_slots) {
  DSV4_CHECK(n_blocks >= 0 && n_blocks <= INT32_MAX && n_slots >= 0 && n_slots <= INT32_MAX);
  // Stacks popped from the back: ids come out in increasing order on a fresh pool.
  free_blocks_.resize(size_t(n_blocks));
  for (int64_t i = 0; i < n_blocks; ++i) free_blocks_[size_t(i)] = int32_t(n_blocks - 1 - i);
  free_slots_.resize(size_t(n_slots));
  for (int64_t i = 0; i < n_slots; ++i) free_slots_[size_t(i)] = int32_t(n_slots - 1 - i);
  block_is_free_.assign(size_t(n_blocks), true);
  slot_is_free_.assign(size_t(n_slots), true);
}

int32_t KvBlockPool::take_slot() {
  if (free_slots_.empty()) return -1;
  const int32_t s = free_slots_.back();
  free_slots_.pop_back();
  slot_is_free_[size_t(s)] = false;
  return s;
}

void KvBlockPool::give_slot(int32_t slot) {
  DSV4_CHECK_MSG(slot >= 0 && slot < total_slots_, "slot ", slot, " of ", total_slots_);
  DSV4_CHECK_MSG(!slot_is_free_[size_t(slot)], "slot ", slot, " given back twice");
  slot_is_free_[size_t(slot)] = true;
  free_slots_.push_back(slot);
}

bool KvBlockPool::take_blocks(int64_t n, std::vector<int32_t>& into) {
  DSV4_CHECK(n >= 0);
  if (n > int64_t(free_blocks_.size())) return false;
  into.insert(into.end(), free_blocks_.end() - n, free_blocks_.end());
  std::reverse(into.end() - n, into.end());
  free_blocks_.resize(free_blocks_.size() - size_t(n));
  for (auto it = into.end() - n; it != into.end(); ++it) block_is_free_[size_t(*it)] = false;
  return true;
}

void KvBlockPool::give_blocks(std::vector<int32_t>& ids) {
  // Every id is checked before any goes back, so a refused call changes nothing.
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    const bool in_range = id >= 0 && id < total_blocks_;
    const bool twice = in_range && block_is_free_[size_t(id)];
    if (!in_range || twice) {
      for (size_t j = 0; j < i; ++j) block_is_free_[size_t(ids[j])] = false;
      DSV4_CHECK_MSG(in_range, "block ", id, " of ", total_blocks_);
      DSV4_CHECK_MSG(!twice, "block ", id, " given back twice");
    }
    block_is_free_[size_t(id)] = true;  // also catches the same id twice in `ids`
  }
  free_blocks_.insert(free_blocks_.end(), ids.rbegin(), ids.rend());
  ids.clear();
}

}  // namespace dsv4
