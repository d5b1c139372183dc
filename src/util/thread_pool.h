// ThreadPool: a small fixed pool of workers with a blocking parallel_for, used by the CPU backend
// and the host tier (cuda/host_experts.h). It owns only scheduling; what runs in parallel (rows of
// a GEMM, heads of attention) is the caller's.
//
// Calls come in bursts: the CPU backend's linears back to back, the host tier's two sweeps per
// layer with the GPU's few hundred microseconds of the layer between them. A worker that has
// finished a job therefore polls for the next one for kPollBeforeSleep before it sleeps on the
// condition variable: a job that starts within that window needs no wake-up (a futex wake of every
// worker, each then taking the mutex in turn), only the poll's read of the generation counter.
// The poll yields the core on every round, so an oversubscribed host (tests run side by side)
// gives its time to threads with work.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dsv4 {

class ThreadPool {
 public:
  // n_threads <= 0: std::thread::hardware_concurrency(). The calling thread counts as one worker.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Longer than the GPU's part of a batch-1 decode layer (≈ 250–300 µs on an H200, 2026-12-04),
  // so the host tier's pool stays awake from one layer to the next; short enough that an idle
  // pool sleeps at once by human measure.
  static constexpr std::chrono::microseconds kPollBeforeSleep{1000};

  int size() const { return int(workers_.size()) + 1; }

  // Calls fn(begin, end) over disjoint ranges covering [0, n), in parallel; returns when all
  // ranges are done and rethrows the first exception. A call from inside a worker (nested
  // parallelism) runs inline on that thread, so callers never deadlock; calls from several
  // outside threads are serialised (one job at a time).
  void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn);

 private:
  void worker_loop();
  void run_chunks();

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one outside caller's job at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  // Bumped under mutex_ when a job starts; workers poll it without the lock, then join under it.
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  // The current job, written under mutex_ only while no worker is inside run_chunks (active_ ==
  // 0), so the workers that joined (under mutex_) read it without the lock. Chunks are claimed
  // with one atomic add each.
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0, job_grain_ = 1;
  std::atomic<int64_t> job_next_{0};
  std::atomic<bool> job_failed_{false};
  int active_ = 0;  // threads inside run_chunks (the caller included), under mutex_
  std::exception_ptr error_;
};

}  // namespace dsv4
