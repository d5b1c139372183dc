// Random step layouts for the batched-runtime kernels' tests: several sequences (distinct slots,
// random positions, chunks of random length — one-token decode rows among them), optional padding
// rows, and a random page table whose block ids are a permutation, so that a kernel reading the
// wrong sequence's page or slot shows; StepLayout's builders (add_chunk, add_padding,
// random_pages) make hand-shaped ones. The host side of kernels/step_rows.cuh.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "cuda/device_buffer.h"
#include "cuda/kernels/step_rows.cuh"
#include "model/kv_blocks.h"

namespace dsv4::cuda::test {

struct StepLayout {
  std::vector<int32_t> pos, slot, first, last;  // per row (step_rows.cuh)
  std::vector<int32_t> pages;                   // [n_slots, per_slot]
  int n_slots = 0, per_slot = 0, n_blocks = 0;
  int rows() const { return int(pos.size()); }

  // Block id of position-block b of `slot`.
  int32_t block(int s, int b) const { return pages[size_t(s) * per_slot + b]; }
  // Pool row of entry j of `slot` with `per_block` entries per block (step_rows.cuh).
  int32_t entry_row(int s, int j, int per_block) const { return block(s, j / per_block) * per_block + j % per_block; }

  // Appends a chunk of `n` consecutive positions from pos0 of the sequence in `slot` (what
  // StepPlan::add_chunk writes), or `n` padding rows (StepPlan::pad_to: pos −1, slot −1, a chunk
  // of their own).
  void add_chunk(int s, int pos0, int n) {
    const int first_row = rows(), last_row = first_row + n - 1;
    for (int i = 0; i < n; ++i) {
      pos.push_back(pos0 + i);
      slot.push_back(s);
      first.push_back(first_row);
      last.push_back(last_row);
    }
  }
  void add_padding(int n) {
    for (int i = 0; i < n; ++i) {
      const int r = rows();
      pos.push_back(-1);
      slot.push_back(-1);
      first.push_back(r);
      last.push_back(r);
    }
  }
  // A page table of `slots` rows of `blocks_per_slot` blocks: distinct block ids drawn from a
  // shuffled [0, slots·blocks_per_slot + spare), so every slot owns blocks (other sequences' keys
  // and entries sit in the pool too) and some ids belong to nobody.
  void random_pages(std::mt19937_64& rng, int slots, int blocks_per_slot, int spare = 7) {
    n_slots = slots;
    per_slot = blocks_per_slot;
    n_blocks = slots * blocks_per_slot + spare;
    std::vector<int32_t> ids(static_cast<size_t>(n_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    pages.assign(ids.begin(), ids.begin() + int64_t(slots) * blocks_per_slot);
  }
};

// `n_seqs` chunks with lengths in [1, max_chunk] (about a third of them single decode rows) at
// chunk starts in [0, max_pos − len], then `n_pad` padding rows; slots drawn without replacement
// from [0, n_slots); every slot's page row filled with distinct block ids covering max_pos.
inline StepLayout random_step_layout(std::mt19937_64& rng, int n_seqs, int max_chunk, int max_pos, int n_slots,
                                     int n_pad = 0) {
  StepLayout L;
  L.random_pages(rng, n_slots, int((max_pos + kKvBlockTokens) / kKvBlockTokens));
  if (n_seqs > n_slots) throw std::invalid_argument("random_step_layout: more sequences than slots");
  std::vector<int32_t> slots(static_cast<size_t>(n_slots));
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  auto draw = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int s = 0; s < n_seqs; ++s) {
    const int len = draw(0, 2) == 0 ? 1 : draw(1, max_chunk);
    const int pos0 = draw(0, std::max(0, max_pos - len));
    L.add_chunk(slots[size_t(s)], pos0, len);
  }
  L.add_padding(n_pad);
  return L;
}

// The layout on the device (kept alive with the struct).
struct DeviceStepLayout {
  explicit DeviceStepLayout(const StepLayout& L)
      : pos(L.pos), slot(L.slot), first(L.first), last(L.last), pages(L.pages), per_slot(L.per_slot) {}
  StepRows rows() const { return {pos.get(), slot.get(), first.get(), last.get()}; }
  PageTable table() const { return {pages.get(), per_slot}; }
  DeviceBuffer<int32_t> pos, slot, first, last, pages;
  int per_slot;
};

}  // namespace dsv4::cuda::test
