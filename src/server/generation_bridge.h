// One HTTP request's generation on the shared Scheduler: submits it, turns sampled ids into text
// on the scheduler's thread (TextStream, so a stop string ends generation at once), and hands
// text, tokens and the outcome to the HTTP thread waiting on it; records per-token latencies.
// Building responses from the updates is openai_response.h's job.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "server/metrics.h"
#include "tokenizer/tokenizer.h"

namespace dsv4::server {

struct GenerationSpec {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int64_t max_tokens = 1;
  std::vector<std::string> stop_strings;
  std::vector<int32_t> stop_ids;  // besides the model's EOS
  bool ignore_eos = false;
};

struct GenerationUpdate {
  std::string text;                       // new output text: whole characters, stop strings cut
  std::vector<SampleResult> tokens;       // sampled since the last update, stop tokens left out
  std::optional<RequestOutcome> outcome;  // in the last update only
};

class Generation {
 public:
  using Clock = std::chrono::steady_clock;

  // Submits at once: throws Error / QueueFullError as Scheduler::submit. TTFT is measured from
  // `arrival` (when the HTTP request came), so it includes tokenizing and queueing.
  Generation(Scheduler& scheduler, const Tokenizer& tokenizer, int32_t eos_id, GenerationSpec spec,
             ServerMetrics& metrics, Clock::time_point arrival);
  ~Generation();  // cancels the request unless its outcome was seen

  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  // Waits up to `timeout` for news and takes everything that arrived (possibly nothing).
  GenerationUpdate wait(std::chrono::milliseconds timeout);
  // Ends the request at the scheduler's next step (kCancelled) and frees its KV blocks then.
  void cancel();
  bool finished() const { return finished_; }  // wait() has returned the outcome

 private:
  struct Shared;  // shared with the scheduler's callbacks, which may outlive this object
  std::shared_ptr<Shared> shared_;
  Scheduler& scheduler_;
  RequestId id_ = 0;
  bool finished_ = false;
  bool cancelled_ = false;
};

}  // namespace dsv4::server
