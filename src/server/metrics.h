// The server's Prometheus metrics (GET /metrics, text exposition format 0.0.4): HTTP requests by
// endpoint and status, finished requests by reason, prompt and generated tokens, running and
// waiting requests, KV pool use, and TTFT / inter-token / end-to-end latency histograms. What
// each event means is decided by its callers (http_server.cpp, generation_bridge.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "engine/scheduler.h"

namespace dsv4::server {

// Cumulative-bucket histogram; not thread-safe on its own (ServerMetrics locks).
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // ascending; +Inf is implicit
  void observe(double v);
  void render(std::string& out, const std::string& name, const std::string& help) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

// Thread-safe: HTTP threads and the scheduler thread record into it concurrently.
class ServerMetrics {
 public:
  ServerMetrics();

  void count_http(const std::string& endpoint, int status);
  void count_finished(const std::string& reason, int64_t prompt_tokens, int64_t generated_tokens);
  void observe_ttft(double seconds);
  void observe_inter_token(double seconds);
  void observe_request(double seconds);  // arrival to last token

  // The whole exposition; `s` gives running/waiting/KV, `in_flight` the HTTP requests open now.
  std::string render(const SchedulerStats& s, int64_t in_flight) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> http_;
  std::map<std::string, uint64_t> finished_;
  uint64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  Histogram ttft_, inter_token_, request_;
};

}  // namespace dsv4::server
