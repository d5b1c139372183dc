// ThreadPool implementation: workers sleep on a condition variable; a job is split into chunks
// claimed under the mutex (chunks are coarse, so the lock is not contended).
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
  for (;;) {
    int64_t begin;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (job_next_ >= job_n_ || error_) return;
      begin = job_next_;
      job_next_ = std::min(job_n_, job_next_ + job_grain_);
    }
    const int64_t end = std::min(job_n_, begin + job_grain_);
    try {
      (*job_)(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void ThreadPool::worker_loop() {
  t_in_pool = true;
  uint64_t seen = 0;
  for (;;) {
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
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    job_n_ = n;
    // ~4 chunks per thread: enough to balance uneven rows without lock traffic.
    job_grain_ = std::max<int64_t>(1, n / (int64_t(size()) * 4));
    job_next_ = 0;
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
    // Workers woken late for this generation find job_next_ >= job_n_ and return at once; the
    // job pointer is cleared only after every worker that joined has left run_chunks().
    job_n_ = 0;
    job_ = nullptr;
    error = error_;
    error_ = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace dsv4
