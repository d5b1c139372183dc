// The generation loop (see generation.h): one request through the scheduler, with the text
// stream (UTF-8 pieces, stop-string hold-back) applied to its tokens.
#include "engine/generation.h"

#include <algorithm>

#include "engine/text_stream.h"
#include "model/config.h"
#include "util/error.h"

namespace dsv4 {

int64_t prefill_chunk(const GenerationOptions& options, const Forward& forward) {
  if (options.prefill_chunk < 0) fail("prefill chunk must be >= 1 (0: the backend's pass), got ", options.prefill_chunk);
  if (options.prefill_chunk > 0) return options.prefill_chunk;
  return forward.pass_rows() > 0 ? forward.pass_rows() : kDefaultPrefillChunk;
}

GenerationResult generate(Forward& forward, SequenceState& seq, const Tokenizer& tokenizer,
                          std::span<const int32_t> prompt, const GenerationOptions& options,
                          const GenerationCallbacks& callbacks, std::span<const int32_t> held) {
  validate(options.sampling);
  if (options.max_tokens < 0) fail("max tokens must be >= 0, got ", options.max_tokens);
  const int64_t chunk = prefill_chunk(options, forward);
  if (prompt.empty()) fail("the prompt is empty: there is nothing to continue from");
  if (int64_t(held.size()) != seq.position())
    fail("generate: the sequence holds ", seq.position(), " tokens but ", held.size(),
         " held ids were given");

  GenerationResult result;
  result.n_prompt = int64_t(prompt.size());
  if (options.max_tokens == 0) return result;  // nothing to sample; nothing fed either

  TextStream text(tokenizer, options.stop_strings);
  auto emit = [&](const TextStream::Piece& p) {
    if (!p.text.empty() && callbacks.on_text) callbacks.on_text(p.text);
    return !p.stopped;
  };
  RequestOutcome outcome;
  Request r;
  r.prompt.assign(prompt.begin(), prompt.end());
  r.sampling = options.sampling;
  r.max_tokens = options.max_tokens;
  r.stop_ids = options.stop_ids;
  r.seq = &seq;
  r.held.assign(held.begin(), held.end());
  r.on_prefill = callbacks.on_prefill;
  r.on_token = [&](const SampleResult& s) {
    if (callbacks.on_token) callbacks.on_token(s.id);
    result.logprobs.push_back(s);
    const int32_t eos = int32_t(forward.config().eos_token_id);
    const bool stop = s.id == eos || std::find(options.stop_ids.begin(), options.stop_ids.end(),
                                               s.id) != options.stop_ids.end();
    if (stop) return true;  // the scheduler finishes on it; its text is never shown
    result.tokens.push_back(s.id);
    return emit(text.push(s.id));
  };
  r.on_finish = [&](const RequestOutcome& o) { outcome = o; };

  SchedulerOptions so;
  so.max_running = 1;
  so.max_step_tokens = chunk;
  so.speculative = options.speculative;
  Scheduler scheduler(forward, so);
  scheduler.submit(std::move(r));
  scheduler.run_until_idle();
  if (outcome.finish == FinishReason::kError) fail(outcome.error);

  result.finish = outcome.finish;
  result.stop_id = outcome.stop_id;
  if (result.finish != FinishReason::kStopString) emit(text.finish());
  result.text = text.text();
  result.prefill_seconds = outcome.ttft_seconds;
  result.decode_seconds = outcome.total_seconds - outcome.ttft_seconds;
  result.speculative = outcome.speculative;
  // Fed: the prompt and every sampled id but the last (which was never fed back).
  result.fed.assign(prompt.begin(), prompt.end());
  for (size_t i = 0; i + 1 < result.logprobs.size(); ++i) result.fed.push_back(result.logprobs[i].id);
  return result;
}

}  // namespace dsv4
