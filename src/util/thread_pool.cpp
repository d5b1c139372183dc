// ThreadPool implementation: workers poll the generation counter for kPollBeforeSleep after each
// job, then sleep on a condition variable; a job's chunks are claimed with an atomic add.
#include "util/thread_pool.h"

#include <algorithm>

namespace dsv4 {

namespace {
thread_local bool t_in_pool = false;  // set on worker threads and while the caller runs a job
}

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks() {
  while (!job_failed_.load(std::memory_order_relaxed)) {
    const int64_t begin = job_next_.fetch_add(job_grain_, std::memory_order_relaxed);
    if (begin >= job_n_) return;
    const int64_t end = std::min(job_n_, begin + job_grain_);
    try {
      (*job_)(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      job_failed_ = true;
    }
  }
}

void ThreadPool::worker_loop() {
  using Clock = std::chrono::steady_clock;
  t_in_pool = true;
  uint64_t seen = 0;
  for (;;) {
    const Clock::time_point poll_end = Clock::now() + kPollBeforeSleep;
    while (generation_.load(std::memory_order_acquire) == seen && !stop_.load(std::memory_order_relaxed) &&
           Clock::now() < poll_end)
      std::this_thread::yield();
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      ++active_;
    }
    run_chunks();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (workers_.empty() || t_in_pool || n == 1) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call(call_mutex_);
  {
    std::unique_lock<std::mutex> lock(mutex_);
    // A worker that joined the previous job after it ended (it found no chunk left) may still be
    // inside run_chunks, reading the job's fields: let it leave before they change.
    done_.wait(lock, [&] { return active_ == 0; });
    job_ = &fn;
    job_n_ = n;
    // ~4 chunks per thread: enough to balance uneven rows.
    job_grain_ = std::max<int64_t>(1, n / (int64_t(size()) * 4));
    job_next_ = 0;
    job_failed_ = false;
    error_ = nullptr;
    ++active_;  // the caller
    ++generation_;
  }
  wake_.notify_all();
  t_in_pool = true;
  run_chunks();
  t_in_pool = false;
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    --active_;
    done_.wait(lock, [&] { return active_ == 0; });
    // Workers joining late for this generation find no chunk left and return at once.
    job_n_ = 0;
    job_ = nullptr;
    error = error_;
    error_ = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace dsv4
