// KvBlockPool (model/kv_blocks.h) against a set-based model of the same pool: random takes and
// gives of blocks and slots, fresh each run. No id is ever held twice, every id stays in range,
// the free counts agree, a take that cannot be served takes nothing, the most recently freed id is
// reused first, and an id given back twice (or out of range) is refused without changing the pool.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <vector>

#include "model/kv_blocks.h"
#include "support/test_util.h"
#include "util/error.h"

namespace dsv4 {
namespace {

TEST(KvBlockPool, FreshPoolHandsOutIdsInIncreasingOrder) {
  KvBlockPool pool(10, 3);
  std::vector<int32_t> a, b;
  ASSERT_TRUE(pool.take_blocks(4, a));
  ASSERT_TRUE(pool.take_blocks(3, b));
  EXPECT_EQ(a, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(b, (std::vector<int32_t>{4, 5, 6}));
  EXPECT_EQ(pool.take_slot(), 0);
  EXPECT_EQ(pool.take_slot(), 1);
  EXPECT_EQ(pool.free_blocks(), 3);
  EXPECT_EQ(pool.free_slots(), 1);
}

TEST(KvBlockPool, RandomTakesAndGivesMatchASetModel) {
  test::Rng rng(71);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t n_blocks = rng.integer(1, 200), n_slots = rng.integer(1, 12);
    KvBlockPool pool(n_blocks, n_slots);
    std::set<int32_t> free_blocks, free_slots;
    for (int32_t i = 0; i < n_blocks; ++i) free_blocks.insert(i);
    for (int32_t i = 0; i < n_slots; ++i) free_slots.insert(i);
    std::vector<std::vector<int32_t>> held;  // block lists, as sequences hold them
    std::vector<int32_t> slots;
    for (int op = 0; op < 2000; ++op) {
      const int64_t kind = rng.integer(0, 3);
      if (kind == 0) {  // take blocks, sometimes more than are free
        const int64_t n = rng.integer(0, std::max<int64_t>(1, int64_t(free_blocks.size()) * 5 / 4));
        std::vector<int32_t> into = {-7};  // a take appends: what was there stays
        const bool ok = pool.take_blocks(n, into);
        ASSERT_EQ(ok, n <= int64_t(free_blocks.size()));
        ASSERT_EQ(into.front(), -7);
        if (!ok) {
          ASSERT_EQ(into.size(), 1u);
          continue;
        }
        ASSERT_EQ(int64_t(into.size()), n + 1);
        into.erase(into.begin());
        for (int32_t id : into) ASSERT_EQ(free_blocks.erase(id), 1u) << "block " << id << " was not free";
        held.push_back(std::move(into));
      } else if (kind == 1 && !held.empty()) {  // give one holder's blocks back
        const size_t h = size_t(rng.integer(0, int64_t(held.size()) - 1));
        std::vector<int32_t> ids = held[h];
        pool.give_blocks(ids);
        EXPECT_TRUE(ids.empty());
        for (int32_t id : held[h]) free_blocks.insert(id);
        // LIFO: the first id of the list given back is the next one handed out.
        if (!held[h].empty()) {
          std::vector<int32_t> one;
          ASSERT_TRUE(pool.take_blocks(1, one));
          EXPECT_EQ(one[0], held[h].front());
          free_blocks.erase(one[0]);
          held.push_back(one);
        }
        held.erase(held.begin() + std::ptrdiff_t(h));
      } else if (kind == 2) {  // take a slot
        const int32_t s = pool.take_slot();
        if (free_slots.empty()) {
          ASSERT_EQ(s, -1);
        } else {
          ASSERT_EQ(free_slots.erase(s), 1u) << "slot " << s << " was not free";
          slots.push_back(s);
        }
      } else if (!slots.empty()) {  // give a slot back
        const size_t i = size_t(rng.integer(0, int64_t(slots.size()) - 1));
        pool.give_slot(slots[i]);
        free_slots.insert(slots[i]);
        slots.erase(slots.begin() + std::ptrdiff_t(i));
      }
      ASSERT_EQ(pool.free_blocks(), int64_t(free_blocks.size()));
      ASSERT_EQ(pool.free_slots(), int64_t(free_slots.size()));
    }
    EXPECT_EQ(pool.total_blocks(), n_blocks);
    EXPECT_EQ(pool.total_slots(), n_slots);
  }
}

TEST(KvBlockPool, DoubleAndForeignGivesAreRefusedAndChangeNothing) {
  KvBlockPool pool(8, 2);
  std::vector<int32_t> a;
  ASSERT_TRUE(pool.take_blocks(5, a));  // 0..4 held, 5..7 free
  const int32_t slot = pool.take_slot();
  struct Case {
    std::vector<int32_t> ids;
    const char* what;
  };
  for (const Case& c : {Case{{1, 6}, "given back twice"},   // 6 is free
                        Case{{2, 2}, "given back twice"},   // the same id twice in one call
                        Case{{3, 8}, "of 8"},               // past the pool
                        Case{{-1}, "of 8"}}) {
    std::vector<int32_t> ids = c.ids;
    try {
      pool.give_blocks(ids);
      ADD_FAILURE() << "give_blocks accepted " << ::testing::PrintToString(c.ids);
    } catch (const InternalError& e) {
      EXPECT_NE(std::string(e.what()).find(c.what), std::string::npos) << e.what();
    }
    EXPECT_EQ(ids, c.ids) << "a refused give must leave its list alone";
    EXPECT_EQ(pool.free_blocks(), 3) << "a refused give must change nothing";
  }
  // The held blocks still go back, once.
  std::vector<int32_t> again = a;
  pool.give_blocks(a);
  EXPECT_EQ(pool.free_blocks(), 8);
  EXPECT_THROW(pool.give_blocks(again), InternalError);
  // Slots: a free slot, or one past the pool, is refused.
  pool.give_slot(slot);
  EXPECT_THROW(pool.give_slot(slot), InternalError);
  EXPECT_THROW(pool.give_slot(2), InternalError);
  EXPECT_EQ(pool.free_slots(), 2);
}

}  // namespace
}  // namespace dsv4
