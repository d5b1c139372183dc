// The scheduler (scheduler.h). One step: take new requests and cancellations, admit waiting
// requests while slots and KV blocks allow, give every decoding sequence one row and fill the rest
// of the token budget with prefill chunks (oldest first), run one Forward::forward over all of
// them, then sample and apply the stop rules. A sequence that cannot grow evicts the newest
// running sequence, which goes back to the front of the queue and is recomputed from its ids.
// A speculating sequence's decode row carries its drafts (k + 1 rows, the MTP block runs along);
// after the step its verdict is applied, the rejected rows rolled back and new drafts made, for
// every such sequence in one Forward::draft call.
#include "engine/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>

#include "model/config.h"

namespace dsv4 {

const char* to_string(FinishReason r) {
  switch (r) {
    case FinishReason::kEos: return "eos";
    case FinishReason::kStopId: return "stop_id";
    case FinishReason::kStopString: return "stop_string";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "?";
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// What the device sampler lacks (model/forward.h DeviceSampling): min-p and log-probabilities.
bool device_can_sample(const SamplingParams& p) {
  return p.min_p == 0.0f && p.top_logprobs == 0 && !p.logprobs;
}

}  // namespace

struct Scheduler::Active {
  RequestId id = 0;
  Request req;
  std::unique_ptr<SequenceState> owned;  // when the request brought no sequence
  SequenceState* seq = nullptr;
  std::vector<int32_t> history;  // the ids `seq` holds, in order
  std::vector<int32_t> to_feed;  // ids still to prefill (prompt, or everything after a preemption)
  int32_t next = -1;             // sampled, not yet fed (decode phase)
  int64_t n_prompt_left = 0;     // prompt ids not yet fed (progress of the first prefill)
  int64_t max_sampled = 0;       // max_tokens capped by the context
  int64_t n_sampled = 0;
  int64_t n_preempted = 0;
  int64_t order = 0;             // admission order (preemption evicts the newest)
  std::optional<Sampler> sampler;
  DeviceSampling device;
  bool on_device = false;
  // Speculative decoding: drafts per step (0: off), the acceptance rule (which also draws every
  // token the request samples on the host), the drafts waiting to be verified (the continuation
  // of `next`) and, when sampling, the logits each was drawn from [drafts, V].
  int speculative = 0;
  std::optional<SpeculativeSampler> spec;
  std::vector<int32_t> drafts;
  std::vector<float> draft_logits;
  SpeculativeCounts counts;
  bool finished = false;
  Clock::time_point t_submit, t_first_scheduled, t_first_token;
  bool scheduled_once = false;

  bool decoding() const { return to_feed.empty() && next >= 0; }
};

Scheduler::Scheduler(Forward& forward, const SchedulerOptions& options)
    : forward_(forward), options_(options) {
  if (options.max_running < 1) fail("scheduler: max running sequences must be >= 1, got ", options.max_running);
  if (options.max_step_tokens < 0)
    fail("scheduler: tokens per step must be >= 1 (0: the backend's pass), got ", options.max_step_tokens);
  if (options_.max_step_tokens == 0)
    options_.max_step_tokens = forward.pass_rows() > 0 ? forward.pass_rows() : kDefaultStepTokens;
  if (options.max_waiting < 0) fail("scheduler: the waiting limit must be >= 0, got ", options.max_waiting);
  if (options.speculative < 0 || options.speculative > kMaxSpeculative)
    fail("speculative decoding: drafted tokens per step must be in [0, ", kMaxSpeculative, "], got ",
         options.speculative);
  if (options.speculative > 0 && !forward.can_draft())
    fail("speculative decoding needs an MTP block (mtp.0.*) and a backend that drafts with it; this "
         "model on this backend cannot draft");
  publish_stats();
}

Scheduler::~Scheduler() = default;

RequestId Scheduler::submit(Request r) {
  const ModelConfig& cfg = forward_.config();
  const KvCacheInfo kv = forward_.kv_cache();
  if (r.prompt.empty()) fail("the prompt is empty: there is nothing to continue from");
  for (size_t i = 0; i < r.prompt.size(); ++i)
    if (r.prompt[i] < 0 || r.prompt[i] >= cfg.vocab_size)
      fail("prompt token ", i, " has id ", r.prompt[i], ", outside the model's vocabulary [0, ",
           cfg.vocab_size, ")");
  validate(r.sampling);
  if (r.max_tokens < 1) fail("max tokens must be >= 1, got ", r.max_tokens);
  if (r.seq && int64_t(r.held.size()) != r.seq->position())
    fail("scheduler: the sequence holds ", r.seq->position(), " tokens but ", r.held.size(),
         " held ids were given");
  if (!r.seq && !r.held.empty()) fail("scheduler: held ids without a sequence");
  const int64_t n_in = int64_t(r.held.size() + r.prompt.size());
  if (n_in >= kv.max_context)
    fail("the prompt is ", n_in, " tokens; the context holds ", kv.max_context,
         " (at least one token must be generated)");

  auto a = std::make_unique<Active>();
  a->req = std::move(r);
  a->t_submit = Clock::now();
  a->max_sampled = std::min(a->req.max_tokens, kv.max_context - n_in);
  a->n_prompt_left = int64_t(a->req.prompt.size());
  a->speculative = options_.speculative;
  // The device sampler cannot apply the speculative-sampling rule: with temperature > 0 a
  // speculating request samples on the host (greedy verification only needs each row's argmax).
  a->on_device = forward_.samples_on_device() && device_can_sample(a->req.sampling) &&
                 (a->speculative == 0 || a->req.sampling.temperature == 0.0f);
  if (a->speculative > 0) a->spec.emplace(a->req.sampling);
  if (a->on_device)
    a->device = DeviceSampling{a->req.sampling.temperature, a->req.sampling.top_k,
                               a->req.sampling.top_p, a->req.sampling.seed};
  else
    a->sampler.emplace(a->req.sampling);
  std::lock_guard lock(mu_);
  if (stopping_) fail("the scheduler is shutting down");
  if (stats_.waiting + int64_t(incoming_.size()) >= options_.max_waiting)
    throw QueueFullError(cat("the queue is full (", options_.max_waiting, " requests waiting)"));
  a->id = next_id_++;
  const RequestId id = a->id;
  incoming_.push_back(std::move(a));
  cv_.notify_all();
  return id;
}

void Scheduler::cancel(RequestId id) {
  std::lock_guard lock(mu_);
  cancelled_.push_back(id);
  cv_.notify_all();
}

void Scheduler::stop(bool cancel_all) {
  std::lock_guard lock(mu_);
  stopping_ = true;
  cancel_all_ = cancel_all_ || cancel_all;
  cv_.notify_all();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lock(mu_);
  SchedulerStats s = stats_;
  s.waiting += int64_t(incoming_.size());
  return s;
}

void Scheduler::publish_stats() {
  const KvCacheInfo kv = forward_.kv_cache();
  std::lock_guard lock(mu_);
  stats_.running = int64_t(running_.size());
  stats_.waiting = int64_t(waiting_.size());
  stats_.kv_blocks_total = kv.total_blocks;
  stats_.kv_blocks_used = kv.total_blocks - kv.free_blocks;
}

void Scheduler::finish(Active& a, FinishReason r, int32_t stop_id, std::string error) {
  if (a.finished) return;
  a.finished = true;
  // Give the KV back now: an owned sequence is destroyed, a borrowed one keeps its ids.
  a.owned.reset();
  if (r == FinishReason::kError && a.req.seq) a.req.seq->reset();
  const Clock::time_point now = Clock::now();
  RequestOutcome o;
  o.finish = r;
  o.stop_id = stop_id;
  o.error = std::move(error);
  o.n_prompt = int64_t(a.req.prompt.size());
  o.n_generated = a.n_sampled;
  o.n_preempted = a.n_preempted;
  o.queue_seconds = a.scheduled_once ? seconds(a.t_submit, a.t_first_scheduled) : seconds(a.t_submit, now);
  o.ttft_seconds = a.n_sampled > 0 ? seconds(a.t_submit, a.t_first_token) : 0.0;
  o.total_seconds = seconds(a.t_submit, now);
  o.speculative = a.counts;
  {
    std::lock_guard lock(mu_);
    stats_.prompt_tokens += o.n_prompt;
    stats_.generated_tokens += o.n_generated;
  }
  if (a.req.on_finish) a.req.on_finish(o);
}

void Scheduler::take_incoming() {
  std::vector<RequestId> cancelled;
  bool cancel_all = false;
  {
    std::lock_guard lock(mu_);
    while (!incoming_.empty()) {
      waiting_.push_back(std::move(incoming_.front()));
      incoming_.pop_front();
    }
    // In the same critical section: submit() checks the queue limit against incoming_ + this,
    // and a count published only after the step let requests through while one ran.
    stats_.waiting = int64_t(waiting_.size());
    cancelled.swap(cancelled_);
    cancel_all = cancel_all_;
  }
  auto is_cancelled = [&](const Active& a) {
    return cancel_all || std::find(cancelled.begin(), cancelled.end(), a.id) != cancelled.end();
  };
  for (auto& a : waiting_)
    if (is_cancelled(*a)) finish(*a, FinishReason::kCancelled);
  for (auto& a : running_)
    if (is_cancelled(*a)) finish(*a, FinishReason::kCancelled);
  remove_finished();
}

void Scheduler::remove_finished() {
  std::erase_if(waiting_, [](const auto& a) { return a->finished; });
  std::erase_if(running_, [](const auto& a) { return a->finished; });
  count_waiting();
}

void Scheduler::count_waiting() {
  std::lock_guard lock(mu_);
  stats_.waiting = int64_t(waiting_.size());
}

// Admission (FIFO): a slot, and blocks for everything the request must prefill, so that an
// admitted prompt is not evicted by its own prefill.
void Scheduler::admit() {
  while (!waiting_.empty() && int64_t(running_.size()) < options_.max_running) {
    Active& a = *waiting_.front();
    if (!a.seq && a.req.seq) {  // first admission of a borrowed sequence
      a.seq = a.req.seq;
      a.history = a.req.held;
      a.to_feed = a.req.prompt;
    } else if (!a.seq) {  // first admission: a slot of its own (kept across preemptions)
      if (forward_.kv_cache().free_sequences == 0) return;
      const int64_t cap = int64_t(a.req.prompt.size()) + a.max_sampled;
      a.owned = forward_.new_sequence(std::min(cap, forward_.kv_cache().max_context));
      a.seq = a.owned.get();
      a.to_feed = a.req.prompt;
    }
    const int64_t need = a.seq->position() + int64_t(a.to_feed.size()) + 1;
    if (!forward_.reserve(*a.seq, need)) {
      if (!running_.empty()) return;  // wait for running sequences to finish
      // Nothing runs and the pool still cannot hold it: it never will (the context check at
      // submit bounds a prompt by the context, but the pool may be smaller).
      finish(a, FinishReason::kError, -1,
             cat("the KV cache cannot hold ", need, " tokens (", forward_.kv_cache().free_blocks,
                 " free blocks of ", forward_.kv_cache().block_tokens, " tokens)"));
      waiting_.pop_front();
      count_waiting();
      continue;
    }
    a.order = next_order_++;
    if (!a.scheduled_once) {
      a.scheduled_once = true;
      a.t_first_scheduled = Clock::now();
    }
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    count_waiting();
  }
}

// Evicts running_[i]: its KV goes back, and it waits at the front of the queue to be recomputed
// from every id it has consumed or sampled (a sampled-not-fed id becomes the last to feed, so the
// recomputation ends exactly where decoding stopped and no sample is drawn twice).
void Scheduler::preempt(size_t i) {
  std::unique_ptr<Active> a = std::move(running_[i]);
  running_.erase(running_.begin() + std::ptrdiff_t(i));
  std::vector<int32_t> all = std::move(a->history);
  if (a->next >= 0) all.push_back(a->next);
  all.insert(all.end(), a->to_feed.begin(), a->to_feed.end());
  a->history.clear();
  a->to_feed = std::move(all);
  a->next = -1;
  a->drafts.clear();  // drafts are proposals: the recomputed sequence drafts anew
  a->draft_logits.clear();
  a->seq->reset();
  ++a->n_preempted;
  waiting_.push_front(std::move(a));
  {
    std::lock_guard lock(mu_);
    ++stats_.preemptions;
    stats_.waiting = int64_t(waiting_.size());
  }
}

// Blocks for `n_tokens` in all for `a`, evicting the newest other running sequences while the
// pool is short; false when `a` itself had to go (it was the newest).
bool Scheduler::grow_or_preempt(Active& a, int64_t n_tokens) {
  while (!forward_.reserve(*a.seq, n_tokens)) {
    size_t newest = 0;
    for (size_t i = 1; i < running_.size(); ++i)
      if (running_[i]->order > running_[newest]->order) newest = i;
    const bool self = running_[newest].get() == &a;
    preempt(newest);
    if (self) return false;
  }
  return true;
}

void Scheduler::accept_sample(Active& a, const SampleResult& s) {
  if (a.n_sampled == 0) a.t_first_token = Clock::now();
  ++a.n_sampled;
  bool keep_going = true;
  if (a.req.on_token) {
    try {
      keep_going = a.req.on_token(s);
    } catch (const std::exception& e) {
      finish(a, FinishReason::kError, -1, cat("token callback: ", e.what()));
      return;
    }
  }
  const int32_t eos = int32_t(forward_.config().eos_token_id);
  const bool stop_id =
      std::find(a.req.stop_ids.begin(), a.req.stop_ids.end(), s.id) != a.req.stop_ids.end();
  if (s.id == eos && !a.req.ignore_eos) return finish(a, FinishReason::kEos, s.id);
  if (stop_id) return finish(a, FinishReason::kStopId, s.id);
  if (!keep_going) return finish(a, FinishReason::kStopString);
  if (a.n_sampled >= a.max_sampled) return finish(a, FinishReason::kLength);
  a.next = s.id;
}

// Applies the verification of one speculating decode row: `n_fed` tokens (the pending `next`
// and its drafts) were fed; the rule keeps a prefix of the drafts plus one token of the main
// model; the sequence is rolled back past the kept tokens and the emitted ones go through the stop
// rules one by one (several at once may end the request part-way: nothing after the stop is
// emitted, and a borrowed sequence keeps exactly the ids fed before the last emitted token).
void Scheduler::settle_verify(Active& a, size_t n_fed, std::span<const float> logits,
                              std::span<const int32_t> sampled_rows) {
  const size_t k = n_fed - 1;
  const int64_t p = a.seq->position() - int64_t(n_fed);  // where `next` went
  const std::span<const int32_t> drafts(a.drafts.data(), k);
  Verdict v;
  if (a.on_device) {  // greedy on the device: each row's argmax (model/forward.h sampled_rows)
    const int32_t vocab = int32_t(forward_.config().vocab_size);
    for (size_t i = 0; i <= k; ++i) {
      SampleResult s;
      s.id = sampled_rows[i];
      s.logprob = std::numeric_limits<float>::quiet_NaN();  // not computed on the device
      DSV4_CHECK_MSG(s.id >= 0 && s.id < vocab, "the backend sampled id ", s.id);
      v.tokens.push_back(s);
      if (i == k || s.id != drafts[i]) break;
      ++v.n_accepted;
    }
  } else {
    const size_t V = size_t(forward_.config().vocab_size);
    v = a.spec->verify(logits, drafts,
                       std::span<const float>(a.draft_logits.data(), std::min(a.draft_logits.size(), k * V)));
  }
  if (k > 0) {
    ++a.counts.verify_steps;
    a.counts.drafted += int64_t(k);
    a.counts.accepted += v.n_accepted;
    std::lock_guard lock(mu_);
    ++stats_.speculative.verify_steps;
    stats_.speculative.drafted += int64_t(k);
    stats_.speculative.accepted += v.n_accepted;
  }
  forward_.rollback(*a.seq, p + v.n_accepted + 1);
  a.history.push_back(a.next);
  a.history.insert(a.history.end(), drafts.begin(), drafts.begin() + v.n_accepted);
  a.next = -1;
  a.drafts.clear();
  a.draft_logits.clear();
  SequenceState* borrowed = a.req.seq;
  int64_t emitted = 0;
  for (const SampleResult& s : v.tokens) {
    ++emitted;
    accept_sample(a, s);
    if (a.finished) break;
  }
  // Ended before the last kept token: a borrowed sequence holds every emitted id but the last
  // (an owned one is gone; a failed one was reset).
  if (a.finished && borrowed && borrowed->position() > p + emitted)
    forward_.rollback(*borrowed, p + emitted);
}

// New drafts for every listed sequence (each with its pending `next`), in one call; as many as
// the request may still emit beyond `next` (a verify emits drafts + 1 tokens at most).
void Scheduler::draft(std::vector<Active*>& who) {
  std::vector<DraftItem> items;
  std::vector<Active*> owners;
  for (Active* a : who) {
    const int64_t n = std::min<int64_t>(a->speculative, a->max_sampled - a->n_sampled - 1);
    if (a->finished || n < 1) continue;
    DraftItem d;
    d.seq = a->seq;
    d.token = a->next;
    d.n_draft = int(n);
    d.drafts = &a->drafts;
    if (!a->spec->greedy()) {
      d.choose = [a](std::span<const float> l) { return a->spec->draw_draft(l); };
      d.logits = &a->draft_logits;
    }
    items.push_back(std::move(d));
    owners.push_back(a);
  }
  if (items.empty()) return;
  try {
    forward_.draft(items);
  } catch (const std::exception& e) {
    for (Active* a : owners) finish(*a, FinishReason::kError, -1, e.what());
  }
}

bool Scheduler::step() {
  take_incoming();
  admit();
  if (running_.empty()) {
    publish_stats();
    return false;
  }

  // Decode rows first (one per decoding sequence, plus its drafts), oldest first; a sequence that
  // cannot grow evicts the newest.
  std::sort(running_.begin(), running_.end(),
            [](const auto& x, const auto& y) { return x->order < y->order; });
  struct Row {
    Active* a;
    std::vector<int32_t> tokens;
    bool samples;
    bool verify;  // a speculating decode row: tokens = next + drafts
  };
  std::vector<Row> rows;
  int64_t budget = options_.max_step_tokens;
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Active& a = *running_[i];
    if (!a.decoding()) continue;
    // Drafts past the budget are left out (a prefix of the drafts is as valid to verify).
    const int64_t k = std::min<int64_t>(int64_t(a.drafts.size()), budget - 1);
    if (!grow_or_preempt(a, a.seq->position() + 1 + k)) break;  // a was the newest: nothing newer runs
    std::vector<int32_t> tokens = {a.next};
    tokens.insert(tokens.end(), a.drafts.begin(), a.drafts.begin() + k);
    rows.push_back({&a, std::move(tokens), true, a.speculative > 0});
    budget -= 1 + k;
  }
  // Then prefill chunks within what is left of the budget (an eviction removes the newest, the
  // last entry, so the index stays valid).
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Active& a = *running_[i];
    if (a.to_feed.empty()) continue;
    const int64_t n = std::min<int64_t>(budget, int64_t(a.to_feed.size()));
    if (!grow_or_preempt(a, a.seq->position() + n)) break;
    rows.push_back({&a, std::vector<int32_t>(a.to_feed.begin(), a.to_feed.begin() + n),
                    n == int64_t(a.to_feed.size()), false});
    budget -= n;
  }
  // Evictions above may have removed rows' owners from running_: drop those rows.
  std::erase_if(rows, [&](const Row& r) {
    return std::none_of(running_.begin(), running_.end(), [&](const auto& p) { return p.get() == r.a; });
  });
  if (rows.empty()) {
    publish_stats();
    return !running_.empty() || !waiting_.empty();
  }

  std::vector<ForwardItem> items(rows.size());
  std::vector<std::vector<float>> logits(rows.size());
  std::vector<int32_t> sampled(rows.size(), -1);
  std::vector<std::vector<int32_t>> sampled_rows(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    Row& r = rows[i];
    ForwardItem& it = items[i];
    it.seq = r.a->seq;
    it.tokens = r.tokens;
    it.mtp = r.a->speculative > 0;  // prefill chunks too: the MTP block consumes the prompt
    it.all_logits = r.verify;
    if (r.samples && r.a->on_device) {
      it.sample = &r.a->device;
      it.sampled = &sampled[i];
      if (r.verify) {
        sampled_rows[i].assign(r.tokens.size(), -1);
        it.sampled_rows = sampled_rows[i].data();
      }
    } else if (r.samples) {
      it.logits = &logits[i];
    }
  }
  try {
    forward_.forward(items);
  } catch (const std::exception& e) {
    // One bad row fails the step: every request in it ends with the error (its state is unknown).
    for (Row& r : rows) finish(*r.a, FinishReason::kError, -1, e.what());
    remove_finished();
    publish_stats();
    return true;
  }
  {
    std::lock_guard lock(mu_);
    ++stats_.steps;
  }

  std::vector<Active*> to_draft;  // speculating sequences with a new pending token
  for (size_t i = 0; i < rows.size(); ++i) {
    Row& r = rows[i];
    Active& a = *r.a;
    if (a.finished) continue;
    if (r.verify) {
      try {
        settle_verify(a, r.tokens.size(), logits[i], sampled_rows[i]);
      } catch (const Error& e) {
        finish(a, FinishReason::kError, -1, e.what());
      }
      if (!a.finished) to_draft.push_back(&a);
      continue;
    }
    const bool was_decode = a.decoding();
    a.history.insert(a.history.end(), r.tokens.begin(), r.tokens.end());
    if (was_decode) {
      a.next = -1;
    } else {
      a.to_feed.erase(a.to_feed.begin(), a.to_feed.begin() + int64_t(r.tokens.size()));
      if (a.n_prompt_left > 0) {
        a.n_prompt_left -= std::min<int64_t>(a.n_prompt_left, int64_t(r.tokens.size()));
        if (a.req.on_prefill) {
          const int64_t total = int64_t(a.req.prompt.size());
          a.req.on_prefill(total - a.n_prompt_left, total);
        }
      }
    }
    if (!r.samples) continue;
    SampleResult s;
    try {
      if (a.on_device) {
        s.id = sampled[i];
        s.logprob = std::numeric_limits<float>::quiet_NaN();  // not computed on the device
        DSV4_CHECK_MSG(s.id >= 0 && s.id < forward_.config().vocab_size, "the backend sampled id ", s.id);
      } else {
        s = a.spec ? a.spec->sample(logits[i]) : a.sampler->sample(logits[i]);
      }
    } catch (const Error& e) {
      finish(a, FinishReason::kError, -1, e.what());
      continue;
    }
    accept_sample(a, s);
    if (a.spec && !a.finished) to_draft.push_back(&a);
  }
  draft(to_draft);
  remove_finished();
  publish_stats();
  return true;
}

void Scheduler::run_until_idle() {
  while (step()) {
  }
}

void Scheduler::run() {
  while (true) {
    const bool worked = step();
    std::unique_lock lock(mu_);
    if (stopping_ && incoming_.empty() && running_.empty() && waiting_.empty()) return;
    // Idle (or waiting for slots held elsewhere): sleep until a submit, cancel or stop. The
    // timeout only bounds the wait for slots that a caller's own sequences free.
    if (!worked)
      cv_.wait_for(lock, std::chrono::milliseconds(50),
                   [&] { return stopping_ || !incoming_.empty() || !cancelled_.empty(); });
  }
}

}  // namespace dsv4
