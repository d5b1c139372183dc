// KvBlockPool (kv_blocks.h): two free lists.
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
}

int32_t KvBlockPool::take_slot() {
  if (free_slots_.empty()) return -1;
  const int32_t s = free_slots_.back();
  free_slots_.pop_back();
  return s;
}

void KvBlockPool::give_slot(int32_t slot) {
  DSV4_CHECK(slot >= 0 && slot < total_slots_ && int64_t(free_slots_.size()) < total_slots_);
  free_slots_.push_back(slot);
}

bool KvBlockPool::take_blocks(int64_t n, std::vector<int32_t>& into) {
  DSV4_CHECK(n >= 0);
  if (n > int64_t(free_blocks_.size())) return false;
  into.insert(into.end(), free_blocks_.end() - n, free_blocks_.end());
  std::reverse(into.end() - n, into.end());
  free_blocks_.resize(free_blocks_.size() - size_t(n));
  return true;
}

void KvBlockPool::give_blocks(std::vector<int32_t>& ids) {
  DSV4_CHECK(int64_t(free_blocks_.size() + ids.size()) <= total_blocks_);
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    DSV4_CHECK(*it >= 0 && *it < total_blocks_);
    free_blocks_.push_back(*it);
  }
  ids.clear();
}

}  // namespace dsv4
