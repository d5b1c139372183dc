// The generation loop: prefill a prompt through a Forward backend, then sample and decode one
// token at a time until EOS, a stop id or string, or the token limit, streaming text as it comes.
// Chat formatting (encoder/parser) stays with the caller; sampling is sampler.h.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "model/forward.h"
#include "tokenizer/tokenizer.h"

namespace dsv4 {

// Why the reference CLI's 300 is not the default: thinking mode spends hundreds of tokens on
// reasoning before the answer starts.
inline constexpr int64_t kDefaultMaxTokens = 2048;
// Prompt tokens per forward call during prefill on a backend without a pass size of its own (the
// CPU backend): the granularity of progress reports. The backends give the same result for any
// chunking (SequenceState semantics, design.md).
inline constexpr int64_t kDefaultPrefillChunk = 256;

struct GenerationOptions {
  int64_t max_tokens = kDefaultMaxTokens;  // generated tokens, EOS/stop token not counted
  SamplingParams sampling;
  std::vector<std::string> stop_strings;   // output ends before the first occurrence
  std::vector<int32_t> stop_ids;           // besides the model's EOS (config.eos_token_id)
  // Prompt tokens per forward call; 0: the backend's pass (Forward::pass_rows(), 8,192 rows on
  // CUDA), else kDefaultPrefillChunk. prefill_chunk() resolves it.
  int64_t prefill_chunk = 0;
  // Tokens drafted with the model's MTP block and verified per step (SchedulerOptions::speculative;
  // 0: off).
  int speculative = 0;
};


// The prompt tokens per forward call that `options` asks of `forward` (resolves 0).
int64_t prefill_chunk(const GenerationOptions& options, const Forward& forward);

struct GenerationResult {
  std::vector<int32_t> tokens;  // sampled ids, without the EOS/stop id that ended the output
  std::string text;             // their decoded text, cut before a stop string
  FinishReason finish = FinishReason::kLength;
  int32_t stop_id = -1;         // the EOS/stop id sampled (kEos, kStopId)
  // One per sampled token (stop token included). When the backend sampled (see generate()),
  // only `id` is set: `logprob` is NaN and `top` empty.
  std::vector<SampleResult> logprobs;
  int64_t n_prompt = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
  SpeculativeCounts speculative;  // drafts verified and kept (all zero without speculation)
  // The ids this call fed to forward(), in order: the prompt and every sampled id but the last
  // (which was never fed back). The sequence holds its earlier ids followed by these, so a
  // follow-up turn can reuse it when its prompt extends exactly that list.
  std::vector<int32_t> fed;
};

struct GenerationCallbacks {
  std::function<void(std::string_view)> on_text;                 // streamed output text
  std::function<void(int64_t done, int64_t total)> on_prefill;  // after every prefill chunk
  std::function<void(int32_t id)> on_token;                      // every sampled id
};

// Feeds `prompt` to `seq`, which already holds `held` (its ids so far; empty for a fresh sequence),
// and generates: one request through a Scheduler (scheduler.h), the same path the server takes.
// Text is streamed through `on_text` in whole UTF-8 characters, never including a stop string or
// any text that could still turn into one. Bad ids or options throw dsv4::Error, and so does a
// failure inside the run (the sequence is reset then).
// Tokens are chosen by the backend when forward.samples_on_device() and the options ask for
// neither min-p nor log-probabilities (top_logprobs 0), else by Sampler from the logits row. Greedy
// gives the same ids either way; with temperature > 0 a seed still makes a run reproducible, but
// the device draws its own random numbers (CUDA: Philox keyed by seed and position), so a seeded
// run differs between the two paths.
GenerationResult generate(Forward& forward, SequenceState& seq, const Tokenizer& tokenizer,
                          std::span<const int32_t> prompt, const GenerationOptions& options,
                          const GenerationCallbacks& callbacks = {},
                          std::span<const int32_t> held = {});

}  // namespace dsv4
