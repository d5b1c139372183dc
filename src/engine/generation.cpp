// The generation loop (see generation.h): chunked prefill, then sample -> decode -> stop checks ->
// one-token forward, with stop-string hold-back so streamed text never has to be taken back.
// The sample is the backend's when it can take it (Forward::samples_on_device), else sampler.h's.
#include "engine/generation.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "model/config.h"
#include "util/error.h"

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

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Text produced but not yet shown, with the stop-string rules applied.
class StopStringFilter {
 public:
  StopStringFilter(const std::vector<std::string>& stops, GenerationResult& result,
                   const GenerationCallbacks& cb)
      : stops_(stops), result_(result), cb_(cb) {}

  // Adds text; returns true when a stop string completed (the text before it has been emitted).
  bool add(std::string_view text, bool final) {
    pending_ += text;
    size_t first = std::string::npos;
    for (const std::string& s : stops_) first = std::min(first, pending_.find(s));
    if (first != std::string::npos) {
      emit(first);
      pending_.clear();
      return true;
    }
    // A stop string can only start inside pending_: anything that could begin one is held here.
    size_t keep = 0;
    if (!final) {
      for (const std::string& s : stops_)
        for (size_t n = std::min(pending_.size(), s.size() - 1); n > keep; --n)
          if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) { keep = n; break; }
    }
    emit(pending_.size() - keep);
    return false;
  }

 private:
  void emit(size_t n) {
    if (n == 0) return;
    const std::string_view piece(pending_.data(), n);
    result_.text += piece;
    if (cb_.on_text) cb_.on_text(piece);
    pending_.erase(0, n);
  }

  const std::vector<std::string>& stops_;
  GenerationResult& result_;
  const GenerationCallbacks& cb_;
  std::string pending_;
};

// What the device sampler lacks (model/forward.h DeviceSampling): min-p and log-probabilities.
bool device_can_sample(const SamplingParams& p) { return p.min_p == 0.0f && p.top_logprobs == 0; }

}  // namespace

GenerationResult generate(Forward& forward, SequenceState& seq, const Tokenizer& tokenizer,
                          std::span<const int32_t> prompt, const GenerationOptions& options,
                          const GenerationCallbacks& callbacks) {
  validate(options.sampling);
  if (options.max_tokens < 0) fail("max tokens must be >= 0, got ", options.max_tokens);
  if (options.prefill_chunk < 1) fail("prefill chunk must be >= 1, got ", options.prefill_chunk);
  if (prompt.empty()) fail("the prompt is empty: there is nothing to continue from");
  for (const std::string& s : options.stop_strings)
    if (s.empty()) fail("stop strings must not be empty");
  const int64_t vocab = forward.config().vocab_size;
  for (size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] < 0 || prompt[i] >= vocab)
      fail("prompt token ", i, " has id ", prompt[i], ", outside the model's vocabulary [0, ", vocab, ")");
  const int32_t eos = static_cast<int32_t>(forward.config().eos_token_id);

  GenerationResult result;
  result.n_prompt = static_cast<int64_t>(prompt.size());
  std::vector<float> logits;
  // On the device path only the sampled id comes back from each step that ends in a sample (the
  // prefill's last chunk, every decode step), not the logits row.
  const bool on_device = forward.samples_on_device() && device_can_sample(options.sampling);
  const DeviceSampling device_sampling{options.sampling.temperature, options.sampling.top_k,
                                       options.sampling.top_p, options.sampling.seed};
  int32_t sampled = -1;
  auto run = [&](std::span<const int32_t> tokens, bool samples) {
    ForwardItem item{&seq, tokens, false, &logits};
    if (on_device && samples) {
      item.logits = nullptr;
      item.sample = &device_sampling;
      item.sampled = &sampled;
      sampled = -1;
    }
    forward.forward(std::span<ForwardItem>(&item, 1));
    if (on_device && samples)
      DSV4_CHECK_MSG(sampled >= 0 && sampled < vocab, "the backend sampled id ", sampled);
  };

  // Prefill in chunks; only the last position's logits (or sample) are needed.
  const Clock::time_point t_prefill = Clock::now();
  for (size_t done = 0; done < prompt.size();) {
    const size_t n = std::min<size_t>(options.prefill_chunk, prompt.size() - done);
    run(prompt.subspan(done, n), done + n == prompt.size());
    done += n;
    if (callbacks.on_prefill) callbacks.on_prefill(static_cast<int64_t>(done), result.n_prompt);
  }
  result.fed.assign(prompt.begin(), prompt.end());
  result.prefill_seconds = seconds_since(t_prefill);

  const Clock::time_point t_decode = Clock::now();
  Sampler sampler(options.sampling);
  StreamDecoder decoder(tokenizer);
  StopStringFilter filter(options.stop_strings, result, callbacks);
  bool stopped_by_string = false;
  while (true) {
    if (static_cast<int64_t>(result.tokens.size()) >= options.max_tokens) {
      result.finish = FinishReason::kLength;
      break;
    }
    SampleResult s;
    if (on_device) {
      s.id = sampled;
      s.logprob = std::numeric_limits<float>::quiet_NaN();  // not computed (no logits came back)
    } else {
      DSV4_CHECK(static_cast<int64_t>(logits.size()) == vocab);
      s = sampler.sample(logits);
    }
    if (callbacks.on_token) callbacks.on_token(s.id);
    const bool is_stop_id =
        std::find(options.stop_ids.begin(), options.stop_ids.end(), s.id) != options.stop_ids.end();
    result.logprobs.push_back(s);
    if (s.id == eos || is_stop_id) {
      result.finish = s.id == eos ? FinishReason::kEos : FinishReason::kStopId;
      result.stop_id = s.id;
      break;
    }
    result.tokens.push_back(s.id);
    if (filter.add(decoder.push(s.id), false)) {
      result.finish = FinishReason::kStopString;
      stopped_by_string = true;
      break;
    }
    if (static_cast<int64_t>(result.tokens.size()) >= options.max_tokens) {
      result.finish = FinishReason::kLength;
      break;  // the last token is not fed: its logits would never be used
    }
    run(std::span<const int32_t>(&result.tokens.back(), 1), true);
    result.fed.push_back(s.id);
  }
  if (!stopped_by_string && filter.add(decoder.finish(), true)) result.finish = FinishReason::kStopString;
  result.decode_seconds = seconds_since(t_decode);
  return result;
}

}  // namespace dsv4
