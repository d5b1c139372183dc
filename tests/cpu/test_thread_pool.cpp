// ThreadPool: every index visited exactly once, exceptions reach the caller, nesting runs inline,
// and workers take part in a job whether it starts while they poll or after they went to sleep.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "util/thread_pool.h"

namespace dsv4 {
namespace {

TEST(ThreadPool, CoversRangeExactlyOnce) {
  ThreadPool pool(4);
  for (int64_t n : {1, 2, 3, 17, 1000, 4097}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST(ThreadPool, ExceptionPropagatesAndPoolStaysUsable) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(100, [](int64_t b, int64_t) {
    if (b == 0) throw std::runtime_error("boom");
  }), std::runtime_error);
  std::atomic<int64_t> sum{0};
  pool.parallel_for(100, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), 4950);
}

TEST(ThreadPool, NestedCallsRunInline) {
  ThreadPool pool(2);
  std::atomic<int64_t> count{0};
  pool.parallel_for(8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pool.parallel_for(10, [&](int64_t b2, int64_t e2) { count += e2 - b2; });
  });
  EXPECT_EQ(count.load(), 80);
}

TEST(ThreadPool, ConcurrentOutsideCallersAreSerialised) {
  ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep)
        pool.parallel_for(97, [&](int64_t b, int64_t e) { total += e - b; });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 4 * 50 * 97);
}

// A worker that misses a job is not an error the caller sees (it runs every chunk itself), only
// lost speed: here each of the two chunks waits until two different threads hold one, so a job
// the worker never joins shows as one thread after the wait's deadline.
TEST(ThreadPool, WorkersJoinJobsStartedWhilePollingAndAfterSleeping) {
  using namespace std::chrono_literals;
  ThreadPool pool(2);
  pool.parallel_for(2, [](int64_t, int64_t) {});
  for (const std::chrono::microseconds idle : {0us, 3 * ThreadPool::kPollBeforeSleep}) {
    std::this_thread::sleep_for(idle);
    std::mutex m;
    std::set<std::thread::id> threads;
    pool.parallel_for(2, [&](int64_t, int64_t) {  // one chunk each: n / (2 threads · 4) rounds up to 1
      {
        std::lock_guard lock(m);
        threads.insert(std::this_thread::get_id());
      }
      const auto deadline = std::chrono::steady_clock::now() + 10s;
      for (;;) {
        {
          std::lock_guard lock(m);
          if (threads.size() >= 2) return;
        }
        if (std::chrono::steady_clock::now() > deadline) return;
        std::this_thread::yield();
      }
    });
    EXPECT_EQ(threads.size(), 2u) << "idle " << idle.count() << " us before the job: the worker did not join it";
  }
}

}  // namespace
}  // namespace dsv4
