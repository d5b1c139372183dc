// ThreadPool: a small fixed pool of workers with a blocking parallel_for, used by the CPU backend.
// It owns only scheduling; what runs in parallel (rows of a GEMM, heads of attention) is the caller's.
#pragma once

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
  uint64_t generation_ = 0;
  bool stop_ = false;
  // The current job (valid while active_ > 0).
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0, job_grain_ = 1, job_next_ = 0;
  int active_ = 0;
  std::exception_ptr error_;
};

}  // namespace dsv4
