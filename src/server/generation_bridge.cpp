// Generation (generation_bridge.h): the scheduler's callbacks write into a mutex-guarded mailbox
// that the HTTP thread drains. The callbacks own the mailbox through a shared_ptr, so a client
// that hangs up (and drops its Generation) never leaves them a dangling pointer.
#include "server/generation_bridge.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>

#include "engine/text_stream.h"

namespace dsv4::server {

struct Generation::Shared {
  Shared(const Tokenizer& tokenizer, std::vector<std::string> stops) : text_stream(tokenizer, std::move(stops)) {}

  std::mutex mu;
  std::condition_variable cv;
  GenerationUpdate pending;  // guarded by mu
  bool news = false;

  // Scheduler thread only.
  TextStream text_stream;
  bool stopped = false;
  bool first_token = true;
  Clock::time_point arrival, last_token;
};

Generation::Generation(Scheduler& scheduler, const Tokenizer& tokenizer, int32_t eos_id,
                       GenerationSpec spec, ServerMetrics& metrics, Clock::time_point arrival)
    : shared_(std::make_shared<Shared>(tokenizer, spec.stop_strings)), scheduler_(scheduler) {
  shared_->arrival = arrival;
  Request r;
  r.prompt = std::move(spec.prompt);
  r.sampling = spec.sampling;
  r.max_tokens = spec.max_tokens;
  r.stop_ids = spec.stop_ids;
  r.ignore_eos = spec.ignore_eos;
  const bool ignore_eos = spec.ignore_eos;
  std::vector<int32_t> stop_ids = std::move(spec.stop_ids);
  ServerMetrics* m = &metrics;
  std::shared_ptr<Shared> s = shared_;
  r.on_token = [s, m, eos_id, ignore_eos, stop_ids](const SampleResult& sample) {
    const Clock::time_point now = Clock::now();
    if (s->first_token) m->observe_ttft(std::chrono::duration<double>(now - s->arrival).count());
    else m->observe_inter_token(std::chrono::duration<double>(now - s->last_token).count());
    s->first_token = false;
    s->last_token = now;
    // Stop tokens end the output without being part of it (the scheduler finishes on them).
    const bool stop_token = (sample.id == eos_id && !ignore_eos) ||
                            std::find(stop_ids.begin(), stop_ids.end(), sample.id) != stop_ids.end();
    if (stop_token || s->stopped) return true;
    const TextStream::Piece piece = s->text_stream.push(sample.id);
    s->stopped = piece.stopped;
    {
      std::lock_guard lock(s->mu);
      s->pending.text += piece.text;
      s->pending.tokens.push_back(sample);
      s->news = true;
    }
    s->cv.notify_all();
    return !piece.stopped;
  };
  r.on_finish = [s, m](const RequestOutcome& o) {
    std::string tail;
    if (!s->stopped) tail = s->text_stream.finish().text;  // held-back text is final now
    m->count_finished(to_string(o.finish), o.n_prompt, o.n_generated);
    m->observe_request(std::chrono::duration<double>(Clock::now() - s->arrival).count());
    {
      std::lock_guard lock(s->mu);
      s->pending.text += tail;
      s->pending.outcome = o;
      s->news = true;
    }
    s->cv.notify_all();
  };
  id_ = scheduler_.submit(std::move(r));
}

Generation::~Generation() {
  if (!finished_) cancel();
}

GenerationUpdate Generation::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(shared_->mu);
  shared_->cv.wait_for(lock, timeout, [&] { return shared_->news; });
  GenerationUpdate out = std::move(shared_->pending);
  shared_->pending = {};
  shared_->news = false;
  if (out.outcome) finished_ = true;
  return out;
}

void Generation::cancel() {
  if (cancelled_) return;
  cancelled_ = true;
  scheduler_.cancel(id_);
}

}  // namespace dsv4::server
