// The scheduler (design.md "Runtime"): owns requests and the KV budget, and runs one forward step
// over many sequences at a time — decode rows of running sequences plus prefill chunks of others,
// under a per-step token budget, as vLLM and SGLang schedule it (continuous batching). Admission
// waits for free sequence slots and KV blocks; a running sequence that cannot grow preempts the
// newest running one, which is recomputed later. Text (stop strings, UTF-8 streaming) is the
// caller's: text_stream.h. Backend-agnostic: it only sees model/forward.h.
// Speculative decoding (SchedulerOptions::speculative): each decoding sequence verifies its MTP
// drafts in k + 1 rows of the step, keeps what speculative.h's rule accepts, rolls the rest back
// and drafts again (model/forward.h's protocol).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "engine/speculative.h"
#include "model/forward.h"
#include "util/error.h"

namespace dsv4 {

enum class FinishReason { kEos, kStopId, kStopString, kLength, kCancelled, kError };
const char* to_string(FinishReason r);

using RequestId = uint64_t;

// Speculative decoding counts (of one request, or totals over all): acceptance rate =
// accepted / drafted; mean accepted length = tokens a verifying step emits on average, the main
// model's own token included: (accepted + verify_steps) / verify_steps (1 = no draft ever kept,
// k + 1 = every draft kept). Steps that verified no draft (the last token of a request) count in
// neither.
struct SpeculativeCounts {
  int64_t verify_steps = 0;  // decode steps that verified at least one drafted token
  int64_t drafted = 0;       // drafted tokens verified
  int64_t accepted = 0;      // of those, kept
  double acceptance_rate() const { return drafted > 0 ? double(accepted) / double(drafted) : 0.0; }
  double mean_accepted_length() const {
    return verify_steps > 0 ? double(accepted + verify_steps) / double(verify_steps) : 0.0;
  }
  SpeculativeCounts& operator+=(const SpeculativeCounts& o) {
    verify_steps += o.verify_steps;
    drafted += o.drafted;
    accepted += o.accepted;
    return *this;
  }
};

// What a request's callbacks see when it ends (exactly once, on the scheduler's thread).
struct RequestOutcome {
  FinishReason finish = FinishReason::kLength;
  int32_t stop_id = -1;          // the EOS / stop id sampled (kEos, kStopId)
  std::string error;             // kError: what went wrong (the request alone failed)
  int64_t n_prompt = 0;          // prompt tokens
  int64_t n_generated = 0;       // sampled tokens, the stop token included
  int64_t n_preempted = 0;       // times the sequence was evicted and recomputed
  double queue_seconds = 0.0;    // submit -> first scheduled
  double ttft_seconds = 0.0;     // submit -> first token
  double total_seconds = 0.0;    // submit -> finish
  SpeculativeCounts speculative; // all zero without speculative decoding
};

struct Request {
  std::vector<int32_t> prompt;      // ids to feed, not empty, each inside the vocabulary
  SamplingParams sampling;
  int64_t max_tokens = 0;           // sampled tokens at most (a stop token included); capped so
                                    // that everything fed fits the context (finish kLength then)
  std::vector<int32_t> stop_ids;    // besides the model's EOS
  bool ignore_eos = false;
  // Optional: continue a sequence the caller owns (chat reuses the prefix it holds). `held` must
  // be the ids it holds (held.size() == seq->position()); `prompt` is appended. The scheduler
  // borrows it: afterwards it holds held + prompt + every sampled id but the last. Preemption
  // resets it and recomputes all of that.
  SequenceState* seq = nullptr;
  std::vector<int32_t> held;
  // Every sampled id, stop token included, in order. Return false to finish the request now
  // (kStopString: the caller found a stop string). Runs on the scheduler's thread.
  std::function<bool(const SampleResult&)> on_token;
  std::function<void(const RequestOutcome&)> on_finish;
  std::function<void(int64_t done, int64_t total)> on_prefill;  // after each prefill chunk
};

// Rows of one step on a backend without a pass size of its own (the CPU backend).
inline constexpr int64_t kDefaultStepTokens = 2048;

struct SchedulerOptions {
  int64_t max_running = 64;       // sequences decoded in one step at most
  // Rows of one forward step (decode rows + prefill chunk tokens); 0: the backend's pass
  // (Forward::pass_rows()), else kDefaultStepTokens.
  int64_t max_step_tokens = 0;
  int64_t max_waiting = 4096;     // submit() refuses beyond this many waiting requests
  // Tokens each decoding sequence drafts with the model's MTP block and verifies per step,
  // 0 … kMaxSpeculative (0: off). Needs Forward::can_draft(). Greedy output is unchanged (bit for
  // bit on a backend whose rows do not depend on their batch); sampled output keeps its
  // distribution (speculative.h), though not the draws of a seed without speculation.
  int speculative = 0;
};

struct SchedulerStats {
  int64_t running = 0, waiting = 0;
  int64_t kv_blocks_used = 0, kv_blocks_total = 0;
  int64_t steps = 0, preemptions = 0;
  int64_t prompt_tokens = 0, generated_tokens = 0;  // since start
  SpeculativeCounts speculative;                    // since start, updated every step
};

// submit() / cancel() / stats() may be called from any thread; step() / run() from one thread.
class Scheduler {
 public:
  Scheduler(Forward& forward, const SchedulerOptions& options);
  ~Scheduler();

  // Error when the request is invalid (empty prompt, id outside the vocabulary, prompt longer than
  // the context, bad sampling parameters); QueueFullError when max_waiting requests wait.
  RequestId submit(Request request);
  // The request ends with kCancelled at the next step boundary and its KV blocks go back to the
  // pool; unknown or finished ids are ignored.
  void cancel(RequestId id);

  // One forward step over the scheduled rows; false when there was nothing to do.
  bool step();
  void run_until_idle();
  // Serving: steps while there is work, sleeps until submit() or stop(); returns after stop()
  // once every request has finished (drain) or been cancelled (when stop(cancel_all = true)).
  void run();
  void stop(bool cancel_all = false);

  SchedulerStats stats() const;
  const Forward& forward() const { return forward_; }

 private:
  struct Active;
  void take_incoming();
  void admit();
  bool grow_or_preempt(Active& a, int64_t n_tokens);
  void preempt(size_t running_index);
  void finish(Active& a, FinishReason r, int32_t stop_id = -1, std::string error = {});
  void accept_sample(Active& a, const SampleResult& s);
  void settle_verify(Active& a, size_t n_fed, std::span<const float> logits,
                     std::span<const int32_t> sampled_rows);
  void draft(std::vector<Active*>& who);
  void remove_finished();
  // stats_.waiting = waiting_.size(), under mu_: called wherever waiting_ changes, so that the
  // queue limit in submit() is exact at every moment (waiting_ itself is the loop thread's).
  void count_waiting();
  void publish_stats();

  Forward& forward_;
  SchedulerOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Active>> incoming_;  // submitted, not yet seen by the step thread
  std::vector<RequestId> cancelled_;
  std::deque<std::unique_ptr<Active>> waiting_;   // step thread only
  std::vector<std::unique_ptr<Active>> running_;  // step thread only
  RequestId next_id_ = 1;
  int64_t next_order_ = 0;  // admission counter (step thread)
  bool stopping_ = false, cancel_all_ = false;
  SchedulerStats stats_;
};

// submit() when the waiting queue is full (HTTP 429).
class QueueFullError : public Error {
 public:
  using Error::Error;
};

}  // namespace dsv4
